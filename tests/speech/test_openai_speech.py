"""Speech through an OpenAI-compatible server, with the real openai client, against a local fake.

What the call relies on: an utterance goes up as a well-formed WAV file with the
language and the hints, speech comes back as 24 kHz PCM in whole samples and
reaches the consumer while the server is still sending, and every failure
(refusal, unreachable server, dropped or stalled response) is a
`SpeechProviderError` that names the server but never the API key, raised
within the provider's time budget.
"""

from __future__ import annotations

import asyncio
import io
import socket
import time
import wave
from collections.abc import AsyncIterator
from contextlib import aclosing

import openai
import pytest

from tests.fakes.openai_server import FakeOpenAI, Reply, Upload, openai_server
from tests.speech import collect, joined, read_wav
from voicecrm.speech.openai_speech import OpenAISpeechToText, OpenAITextToSpeech
from voicecrm.voice.ports import PcmAudio, SpeechProviderError, SpeechToText, TextToSpeech

__all__ = ["openai_server"]

API_KEY = "sk-test-speech-0123456789SECRET"
# Real speech as the fake server's reply: the fixture recording, 8 kHz samples
# played back as if they were 24 kHz (the provider cannot tell, and need not).
SPEECH = read_wav("my-name").pcm


@pytest.fixture
async def stt(openai_server: FakeOpenAI) -> AsyncIterator[OpenAISpeechToText]:
    async with OpenAISpeechToText(base_url=openai_server.base_url, api_key=API_KEY) as provider:
        yield provider


@pytest.fixture
async def tts(openai_server: FakeOpenAI) -> AsyncIterator[OpenAITextToSpeech]:
    async with OpenAITextToSpeech(base_url=openai_server.base_url, api_key=API_KEY) as provider:
        yield provider


def unused_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]  # nothing listens there once the probe is closed
    return port


async def speak(tts: TextToSpeech, text: str = "Hello, you have reached Acme.") -> list[PcmAudio]:
    return await collect(tts.synthesize(text, voice=None, language="en-US"))


def test_they_are_speech_providers(stt: OpenAISpeechToText, tts: OpenAITextToSpeech) -> None:
    speech_to_text: SpeechToText = stt
    text_to_speech: TextToSpeech = tts
    assert speech_to_text.label.startswith("openai gpt-4o-mini-transcribe at http://127.0.0.1:")
    assert text_to_speech.label.startswith("openai gpt-4o-mini-tts at http://127.0.0.1:")


async def test_labels_name_the_model_alone_on_openai_itself() -> None:
    async with OpenAISpeechToText(api_key=API_KEY, model="whisper-1") as stt:
        assert stt.label == "openai whisper-1"


# Speech to text


async def test_an_utterance_goes_up_as_a_wav_file_with_its_language_and_hints(
    openai_server: FakeOpenAI, stt: OpenAISpeechToText
) -> None:
    openai_server.script.append(Reply(text="  My name is John Smith.  "))
    utterance = read_wav("my-name")

    transcript = await stt.transcribe(utterance, language="en-US", hints=("Smith", " Jones "))

    assert transcript.text == "My name is John Smith."
    assert transcript.confidence is None
    (form,) = openai_server.requests
    assert openai_server.paths == ["/v1/audio/transcriptions"]
    assert openai_server.headers[0]["Authorization"] == f"Bearer {API_KEY}"
    assert form["model"] == "gpt-4o-mini-transcribe"
    assert form["language"] == "en"
    assert form["prompt"] == "Smith, Jones"
    assert form["response_format"] == "json"
    upload = form["file"]
    assert isinstance(upload, Upload)
    assert upload.filename == "utterance.wav"
    assert upload.content_type == "audio/wav"
    with wave.open(io.BytesIO(upload.data), "rb") as wav:
        assert (wav.getnchannels(), wav.getsampwidth(), wav.getframerate()) == (1, 2, 8000)
        assert wav.readframes(wav.getnframes()) == utterance.pcm


async def test_without_hints_or_a_language_those_fields_are_left_out(
    openai_server: FakeOpenAI,
) -> None:
    openai_server.script.append(Reply(text="Bonjour."))
    async with OpenAISpeechToText(
        base_url=openai_server.base_url, api_key=API_KEY, model="whisper-1"
    ) as stt:
        transcript = await stt.transcribe(read_wav("my-name"), language="")

    assert transcript.text == "Bonjour."
    (form,) = openai_server.requests
    assert form["model"] == "whisper-1"
    assert "language" not in form
    assert "prompt" not in form


async def test_no_audio_is_no_request(openai_server: FakeOpenAI, stt: OpenAISpeechToText) -> None:
    assert (await stt.transcribe(PcmAudio(b"", 8000), language="en-US")).text == ""
    assert openai_server.requests == []


# Text to speech


async def test_speech_streams_as_24_khz_pcm_in_whole_samples(
    openai_server: FakeOpenAI, tts: OpenAITextToSpeech
) -> None:
    openai_server.script.append(Reply(audio=SPEECH, audio_chunks=(1, 3, 5, 2, 7, 1001, 4097)))

    chunks = await speak(tts)

    assert {chunk.sample_rate for chunk in chunks} == {24000}
    assert all(chunk.pcm and len(chunk.pcm) % 2 == 0 for chunk in chunks)
    assert joined(chunks).pcm == SPEECH
    assert openai_server.paths == ["/v1/audio/speech"]
    assert openai_server.requests == [
        {
            "model": "gpt-4o-mini-tts",
            "voice": "alloy",
            "input": "Hello, you have reached Acme.",
            "response_format": "pcm",
        }
    ]


async def test_a_voice_asked_for_replaces_the_default(openai_server: FakeOpenAI) -> None:
    openai_server.script += [Reply(audio=SPEECH), Reply(audio=SPEECH)]
    async with OpenAITextToSpeech(
        base_url=openai_server.base_url, api_key=API_KEY, model="tts-1", voice="nova"
    ) as tts:
        await speak(tts)
        await collect(tts.synthesize("Hi.", voice="onyx", language="en-US"))

    assert [(body["model"], body["voice"]) for body in openai_server.requests] == [
        ("tts-1", "nova"),
        ("tts-1", "onyx"),
    ]


async def test_audio_reaches_the_consumer_while_the_server_is_still_sending(
    openai_server: FakeOpenAI, tts: OpenAITextToSpeech
) -> None:
    rest = asyncio.Event()
    openai_server.script.append(
        Reply(audio=SPEECH, audio_chunks=(4000, 4000), stall=rest, stall_after=2)
    )

    async with aclosing(tts.synthesize("Hello.", voice=None, language="en-US")) as stream:
        first = await anext(stream)  # the server is holding back the rest
        assert first.pcm == SPEECH[: len(first.pcm)]
        rest.set()
        chunks = [first] + [chunk async for chunk in stream]

    assert joined(chunks).pcm == SPEECH


async def test_a_half_sample_at_the_end_is_dropped(
    openai_server: FakeOpenAI, tts: OpenAITextToSpeech
) -> None:
    openai_server.script.append(Reply(audio=SPEECH[:1001], audio_chunks=(333, 333)))

    chunks = await speak(tts)

    assert joined(chunks).pcm == SPEECH[:1000]


async def test_a_reply_without_audio_is_a_failure(
    openai_server: FakeOpenAI, tts: OpenAITextToSpeech
) -> None:
    openai_server.script.append(Reply(audio=b""))

    with pytest.raises(SpeechProviderError, match="returned no audio"):
        await speak(tts)


async def test_nothing_to_say_is_no_request(
    openai_server: FakeOpenAI, tts: OpenAITextToSpeech
) -> None:
    assert await speak(tts, "   ") == []
    assert openai_server.requests == []


async def test_a_consumer_that_stops_early_frees_the_connection(
    openai_server: FakeOpenAI, tts: OpenAITextToSpeech
) -> None:
    """A barge-in closes the response; the next prompt is not stuck behind it."""
    never = asyncio.Event()
    openai_server.script += [
        Reply(audio=SPEECH, audio_chunks=(2000,), stall=never, stall_after=1),
        Reply(audio=SPEECH[:4000]),
    ]

    async with aclosing(tts.synthesize("A long menu.", voice=None, language="en-US")) as stream:
        await anext(stream)

    assert joined(await speak(tts)).pcm == SPEECH[:4000]


# Failures


async def test_a_refusal_names_the_server_and_status_but_never_the_key(
    openai_server: FakeOpenAI, stt: OpenAISpeechToText, tts: OpenAITextToSpeech
) -> None:
    echo = "Internal error for key {api_key}"
    openai_server.script += [Reply.http_error(500, echo), Reply.http_error(500, echo)]

    with pytest.raises(SpeechProviderError) as heard:
        await stt.transcribe(read_wav("my-name"), language="en-US")
    with pytest.raises(SpeechProviderError) as spoken:
        await speak(tts)

    for error, kind in ((heard.value, "speech-to-text"), (spoken.value, "text-to-speech")):
        message = str(error)
        assert f"The {kind} server at {openai_server.base_url}" in message
        assert "refused the request with HTTP 500" in message
        assert API_KEY not in message
        assert "[redacted]" in message
        assert isinstance(error.__cause__, openai.InternalServerError)
    assert len(openai_server.requests) == 2  # no retries


async def test_a_rejected_key_says_to_check_it(
    openai_server: FakeOpenAI, tts: OpenAITextToSpeech
) -> None:
    openai_server.script.append(
        Reply.http_error(401, "Incorrect API key", type="invalid_request_error")
    )

    with pytest.raises(SpeechProviderError, match=r"HTTP 401.*Check the API key"):
        await speak(tts)


async def test_an_unreachable_server_is_a_provider_error() -> None:
    base_url = f"http://127.0.0.1:{unused_port()}/v1"
    async with (
        OpenAISpeechToText(base_url=base_url, api_key=API_KEY) as stt,
        OpenAITextToSpeech(base_url=base_url, api_key=API_KEY) as tts,
    ):
        with pytest.raises(SpeechProviderError, match="could not be reached") as heard:
            await stt.transcribe(read_wav("my-name"), language="en-US")
        with pytest.raises(SpeechProviderError, match="could not be reached") as spoken:
            await speak(tts)

    assert isinstance(heard.value.__cause__, openai.APIConnectionError)
    assert isinstance(spoken.value.__cause__, openai.APIConnectionError)


async def test_a_connection_dropped_in_the_middle_of_the_audio_is_a_failure(
    openai_server: FakeOpenAI, tts: OpenAITextToSpeech
) -> None:
    openai_server.script.append(
        Reply(audio=SPEECH, audio_chunks=(2000, 2000), stop_after=1, abort=True)
    )
    received: list[PcmAudio] = []

    with pytest.raises(SpeechProviderError, match="dropped the connection"):
        async for chunk in tts.synthesize("Hello.", voice=None, language="en-US"):
            received.append(chunk)

    assert joined(received).pcm == SPEECH[: len(joined(received).pcm)]


async def test_a_server_that_never_answers_trips_the_budget_quickly(
    openai_server: FakeOpenAI,
) -> None:
    openai_server.script += [
        Reply(text="Too late.", stall=asyncio.Event()),
        Reply(audio=SPEECH, stall=asyncio.Event()),
    ]
    async with (
        OpenAISpeechToText(base_url=openai_server.base_url, timeout=0.2) as stt,
        OpenAITextToSpeech(base_url=openai_server.base_url, timeout=0.2) as tts,
    ):
        started = time.monotonic()
        with pytest.raises(SpeechProviderError, match=r"within the 0\.2 s budget"):
            await stt.transcribe(read_wav("my-name"), language="en-US")
        with pytest.raises(SpeechProviderError, match="before the audio started"):
            await speak(tts)

    assert time.monotonic() - started < 2.0


async def test_audio_that_stalls_after_starting_trips_the_budget(
    openai_server: FakeOpenAI,
) -> None:
    openai_server.script.append(
        Reply(audio=SPEECH, audio_chunks=(2000,), stall=asyncio.Event(), stall_after=1)
    )
    async with OpenAITextToSpeech(base_url=openai_server.base_url, timeout=0.2) as tts:
        stream = tts.synthesize("Hello.", voice=None, language="en-US")
        async with aclosing(stream):
            await anext(stream)
            started = time.monotonic()
            with pytest.raises(SpeechProviderError, match="in the middle of the audio"):
                await anext(stream)

    assert time.monotonic() - started < 1.0


async def test_a_slow_consumer_is_not_counted_against_the_server(
    openai_server: FakeOpenAI,
) -> None:
    """Playback reads at the pace of speech; only the server's own silences count."""
    openai_server.script.append(Reply(audio=SPEECH, audio_chunks=(2000, 2000)))
    async with OpenAITextToSpeech(base_url=openai_server.base_url, timeout=0.2) as tts:
        received = []
        async with aclosing(tts.synthesize("Hello.", voice=None, language="en-US")) as stream:
            async for chunk in stream:
                received.append(chunk)
                await asyncio.sleep(0.1)  # playing the chunk, not waiting for anything

    assert joined(received).pcm == SPEECH


# Lifecycle


async def test_aclose_closes_the_client_the_provider_created(openai_server: FakeOpenAI) -> None:
    stt = OpenAISpeechToText(base_url=openai_server.base_url, api_key=API_KEY)
    tts = OpenAITextToSpeech(base_url=openai_server.base_url, api_key=API_KEY)
    for provider in (stt, tts):
        await provider.aclose()
        await provider.aclose()
        assert provider.client.is_closed()
    with pytest.raises(RuntimeError, match="after aclose"):
        await stt.transcribe(read_wav("my-name"), language="en-US")
    with pytest.raises(RuntimeError, match="after aclose"):
        await speak(tts)


async def test_an_injected_client_is_used_and_left_open(openai_server: FakeOpenAI) -> None:
    client = openai.AsyncOpenAI(base_url=openai_server.base_url, api_key=API_KEY, max_retries=0)
    openai_server.script += [Reply(text="Injected."), Reply(audio=SPEECH)]
    try:
        async with OpenAISpeechToText(client=client) as stt:
            assert (await stt.transcribe(read_wav("my-name"), language="en")).text == "Injected."
        async with OpenAITextToSpeech(client=client) as tts:
            assert joined(await speak(tts)).pcm == SPEECH
        assert not client.is_closed()
    finally:
        await client.close()


@pytest.mark.parametrize(
    "settings",
    [{"timeout": 0}, {"connect_timeout": -1}, {"max_retries": -1}, {"model": " "}],
)
def test_impossible_settings_are_refused(settings: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        OpenAISpeechToText(api_key=API_KEY, **settings)  # type: ignore[arg-type]
