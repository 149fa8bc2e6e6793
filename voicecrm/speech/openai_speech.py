"""Speech in and out through any OpenAI-compatible audio API, with the real openai client.

`OpenAISpeechToText` posts one finished utterance to `/v1/audio/transcriptions`
as a WAV file; `OpenAITextToSpeech` streams `/v1/audio/speech` as raw 24 kHz PCM
so that playback starts with the first bytes instead of after the whole reply.
Both work against OpenAI itself and against local servers that speak the same
API (Speaches, LocalAI, vLLM's transcription endpoint, Kokoro-FastAPI...).

They follow the conventions of `voicecrm.agent.openai_llm`, for the same reason:
on a live call every second of waiting is silence. So the client never retries
on its own (`max_retries=0`), every request is bounded by the provider's own
deadline rather than the client's 600 s default, and whatever goes wrong (a
refusal, a dropped connection, a stall) surfaces as a `SpeechProviderError`
whose message names the server and model but never the API key, so that the
call can apologise or fall back at once.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable
from contextlib import AsyncExitStack
from types import TracebackType
from typing import Self, TypeVar
from urllib.parse import urlsplit

import httpx2
import openai

from voicecrm.integrations.openai_defaults import (
    DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_MAX_RETRIES,
    DEFAULT_SPEECH_MODEL,
    DEFAULT_TRANSCRIPTION_MODEL,
    DEFAULT_VOICE,
    OPENAI_BASE_URL,
)
from voicecrm.integrations.openai_errors import KEYLESS_PLACEHOLDER, OpenAIErrorText
from voicecrm.voice.ports import PcmAudio, SpeechProviderError, Transcript
from voicecrm.voice.wav import wav_bytes

# What `response_format="pcm"` means in the OpenAI API: 24 kHz, 16-bit little-endian, mono.
SPEECH_SAMPLE_RATE = 24000
DEFAULT_TRANSCRIPTION_TIMEOUT = 10.0
DEFAULT_SPEECH_TIMEOUT = 10.0
# Sent to servers that need no key: the client requires one and would otherwise
# read OPENAI_API_KEY from the environment.
# Whisper-style prompts are cut at a couple of hundred tokens; a longer prompt
# only costs upload time.
_MAX_PROMPT_CHARS = 800

_T = TypeVar("_T")


class _OpenAIAudioProvider:
    """What both providers share: the owned client, the deadlines, the error messages.

    The provider owns the `openai.AsyncOpenAI` client it creates and closes it in
    `aclose()`; an injected `client` belongs to the caller and is left open (its
    base URL, key and retries then apply).
    """

    _kind = "speech"

    def __init__(
        self,
        *,
        base_url: str,
        api_key: str | None,
        model: str,
        timeout: float,
        connect_timeout: float,
        max_retries: int,
        client: openai.AsyncOpenAI | None,
    ) -> None:
        if timeout <= 0 or connect_timeout <= 0:
            raise ValueError("Speech provider timeouts must be positive.")
        if max_retries < 0:
            raise ValueError("Speech provider retries must be zero or more.")
        if not model.strip():
            raise ValueError("A speech model name is required.")
        self._model = model.strip()
        self._timeout = timeout
        self._connect_timeout = min(connect_timeout, timeout)
        self._owns_client = client is None
        if client is None:
            client = openai.AsyncOpenAI(
                base_url=base_url,
                api_key=api_key or KEYLESS_PLACEHOLDER,
                max_retries=max_retries,
                # A backstop only: every request sets its own from `timeout`.
                timeout=openai.Timeout(60.0, connect=self._connect_timeout),
            )
        self._client = client
        self._errors = OpenAIErrorText(client.api_key)
        self._server = _server_name(str(client.base_url))
        self._closed = False

    @property
    def label(self) -> str:
        """The model, and the server when it is not OpenAI's, for logs and the simulator."""
        if self._server == OPENAI_BASE_URL:
            return f"openai {self._model}"
        return f"openai {self._model} at {self._server}"

    @property
    def model(self) -> str:
        return self._model

    @property
    def client(self) -> openai.AsyncOpenAI:
        return self._client

    async def aclose(self) -> None:
        """Close the client if this provider created it; safe to call more than once."""
        if self._closed:
            return
        self._closed = True
        if self._owns_client:
            await self._client.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError(f"{type(self).__name__} used after aclose()")

    def _request_timeout(self) -> openai.Timeout:
        return openai.Timeout(self._timeout, connect=self._connect_timeout)

    def _where(self) -> str:
        return f"The {self._kind} server at {self._server} (model {self._model})"

    async def _bounded(self, step: Awaitable[_T], budget: str) -> _T:
        """Await one step of a request within `timeout`, translating every failure.

        One deadline per step (never across a `yield`), so that the time the
        consumer takes to play the audio is not counted against the server.
        """
        where = self._where()
        try:
            async with asyncio.timeout(self._timeout):
                return await step
        except TimeoutError as err:
            raise SpeechProviderError(
                f"{where} did not answer within the {self._timeout:g} s budget {budget}."
            ) from err
        except openai.OpenAIError as err:
            raise SpeechProviderError(self._errors.describe(err, where)) from err
        except httpx2.TimeoutException as err:
            raise SpeechProviderError(f"{where} timed out {budget}.") from err
        except httpx2.HTTPError as err:
            # Raised by the transport while a streamed body is read: the client
            # only translates errors that happen before the response starts.
            raise SpeechProviderError(
                f"{where} dropped the connection {budget} ({type(err).__name__})."
            ) from err


class OpenAISpeechToText(_OpenAIAudioProvider):
    """Transcribes finished utterances with `/v1/audio/transcriptions`.

    `timeout` bounds each transcription from the upload to the answer; a
    transcription that comes too late is useless to a caller who is waiting.
    """

    _kind = "speech-to-text"

    def __init__(
        self,
        *,
        base_url: str = OPENAI_BASE_URL,
        api_key: str | None = None,
        model: str = DEFAULT_TRANSCRIPTION_MODEL,
        timeout: float = DEFAULT_TRANSCRIPTION_TIMEOUT,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        max_retries: int = DEFAULT_MAX_RETRIES,
        client: openai.AsyncOpenAI | None = None,
    ) -> None:
        super().__init__(
            base_url=base_url,
            api_key=api_key,
            model=model,
            timeout=timeout,
            connect_timeout=connect_timeout,
            max_retries=max_retries,
            client=client,
        )

    async def transcribe(
        self, audio: PcmAudio, *, language: str, hints: tuple[str, ...] = ()
    ) -> Transcript:
        """The utterance's text; hints go into the `prompt`, which biases the
        model towards their spelling without forcing them on free speech."""
        self._check_open()
        if len(audio.pcm) < 2:
            return Transcript("")
        request = self._client.audio.transcriptions.create(
            file=("utterance.wav", wav_bytes(audio), "audio/wav"),
            model=self._model,
            language=primary_language(language) or openai.omit,
            prompt=_prompt(hints) or openai.omit,
            response_format="json",
            timeout=self._request_timeout(),
        )
        result = await self._bounded(request, "for a transcription")
        return Transcript(result.text.strip())


class OpenAITextToSpeech(_OpenAIAudioProvider):
    """Streams speech from `/v1/audio/speech` as raw PCM, 24 kHz mono 16-bit.

    `timeout` bounds the wait for the response to start and then every gap
    between two pieces of audio, but not the whole reply: the consumer reads at
    playback speed, and a long answer may rightly take longer than any budget.
    The `language` argument is not sent: these models speak the language of the
    text they are given.
    """

    _kind = "text-to-speech"

    def __init__(
        self,
        *,
        base_url: str = OPENAI_BASE_URL,
        api_key: str | None = None,
        model: str = DEFAULT_SPEECH_MODEL,
        voice: str = DEFAULT_VOICE,
        timeout: float = DEFAULT_SPEECH_TIMEOUT,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        max_retries: int = DEFAULT_MAX_RETRIES,
        client: openai.AsyncOpenAI | None = None,
    ) -> None:
        super().__init__(
            base_url=base_url,
            api_key=api_key,
            model=model,
            timeout=timeout,
            connect_timeout=connect_timeout,
            max_retries=max_retries,
            client=client,
        )
        if not voice.strip():
            raise ValueError("A voice name is required.")
        self._voice = voice.strip()

    @property
    def voice(self) -> str:
        return self._voice

    async def synthesize(
        self, text: str, *, voice: str | None, language: str
    ) -> AsyncGenerator[PcmAudio, None]:
        """Yield the audio as it arrives, always in whole 16-bit samples.

        Closing the generator early (a barge-in) closes the HTTP response at once,
        which stops the server from generating the rest.
        """
        self._check_open()
        if not text.strip():
            return
        manager = self._client.audio.speech.with_streaming_response.create(
            model=self._model,
            voice=voice or self._voice,
            input=text,
            response_format="pcm",
            timeout=self._request_timeout(),
        )
        async with AsyncExitStack() as stack:
            response = await self._bounded(
                stack.enter_async_context(manager), "before the audio started"
            )
            chunks = response.iter_bytes()
            stack.push_async_callback(_aclose, chunks)
            carry = b""
            received = 0
            while True:
                try:
                    data = await self._bounded(anext(chunks), "in the middle of the audio")
                except StopAsyncIteration:
                    break
                received += len(data)
                data = carry + data
                whole = len(data) - len(data) % 2
                carry = data[whole:]
                if whole:
                    yield PcmAudio(data[:whole], SPEECH_SAMPLE_RATE)
            # A trailing odd byte is half a sample: it cannot be played, so it is dropped.
            if received < 2:
                raise SpeechProviderError(f"{self._where()} returned no audio.")


def primary_language(language: str) -> str:
    """The primary subtag ("en-US" gives "en"): servers take ISO-639-1 codes, not locales."""
    return language.strip().replace("_", "-").split("-", 1)[0].lower()


def _prompt(hints: tuple[str, ...]) -> str:
    prompt = ", ".join(hint.strip() for hint in hints if hint.strip())
    return prompt[:_MAX_PROMPT_CHARS]


async def _aclose(chunks: AsyncIterator[bytes]) -> None:
    """Finish the body iterator now rather than whenever it is garbage-collected."""
    if isinstance(chunks, AsyncGenerator):
        await chunks.aclose()


def _server_name(base_url: str) -> str:
    """The base URL without credentials or query, fit for an error message."""
    parts = urlsplit(base_url)
    host = parts.hostname or "?"
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path.rstrip('/')}"
