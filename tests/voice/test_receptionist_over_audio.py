"""The AI receptionist end to end over audio, with every provider behind a local
OpenAI-compatible server reached through the real openai client.

The caller's words are real speech (espeak-ng) sent as 20 ms mu-law frames on
an emulated carrier line; the server transcribes them (scripted text), the
model answers in a stream with a `create_crm_note` tool call, and its speech
comes back as streamed PCM that goes out on the line. The note must end up on
the contact's timeline, and the turn's latency on the call's record.
"""

from __future__ import annotations

import io
import json
import wave
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import select

from tests.conftest import TeamWorld
from tests.fakes.openai_server import FakeOpenAI, Reply, Upload, openai_server
from tests.scenarios.conftest import scenario_from
from tests.speech_audio import needs_espeak, spoken, tone
from voicecrm.agent.openai_llm import OpenAILanguageModel
from voicecrm.calls.interface import CallInfo, Direction
from voicecrm.crm import timeline
from voicecrm.crm.models import CallRecord, Note
from voicecrm.scenarios.runner import run_call
from voicecrm.speech.openai_speech import OpenAISpeechToText, OpenAITextToSpeech
from voicecrm.storage import Database
from voicecrm.telephony.simulator.audio_line import (
    CallerAction,
    EmulatedLine,
    Silence,
    Speak,
    WaitForSpeech,
    WaitForTurn,
)
from voicecrm.telephony.voice_calls import SpeechProviders, voice_call

__all__ = ["openai_server"]

RECEPTIONIST = """
name: ai-audio
business: {name: Acme Plumbing}
steps:
  brain:
    agent:
      greeting: "Acme Plumbing, how can I help?"
      instructions: "You work for {{ business.name }}."
"""


@pytest.fixture
async def providers(openai_server: FakeOpenAI) -> AsyncIterator[SpeechProviders]:
    def stt(_provider: str, _model: str | None) -> OpenAISpeechToText:
        return OpenAISpeechToText(base_url=openai_server.base_url, api_key="sk-test")

    def tts(_provider: str, _model: str | None) -> OpenAITextToSpeech:
        return OpenAITextToSpeech(base_url=openai_server.base_url, api_key="sk-test")

    owned = SpeechProviders(build_stt=stt, build_tts=tts)
    try:
        yield owned
    finally:
        await owned.aclose()


def speech_reply(seconds: float) -> Reply:
    """What /v1/audio/speech streams: 24 kHz PCM, in odd-sized pieces."""
    return Reply(audio=tone(seconds, rate=24000), audio_chunks=(999, 4801, 12345))


@needs_espeak
async def test_a_spoken_request_becomes_a_note_on_the_timeline(
    database: Database,
    world: TeamWorld,
    openai_server: FakeOpenAI,
    providers: SpeechProviders,
) -> None:
    words = spoken("Hi, this is Jane, my kitchen pipe is leaking")
    openai_server.script += [
        speech_reply(1.0),  # the greeting
        Reply(text="Hi, this is Jane, my kitchen pipe is leaking."),  # the transcription
        Reply(
            text="I'm sorry to hear that.",
            tool_calls=[
                (
                    "create_crm_note",
                    json.dumps({"content": "Leaking kitchen pipe", "type": "warning"}),
                )
            ],
        ),
        speech_reply(0.8),
        Reply(text="A plumber will call you today. Goodbye!", tool_calls=[("end_call", "{}")]),
        speech_reply(1.0),
        speech_reply(0.4),
    ]
    info = CallInfo(
        call_id="audio-1",
        direction=Direction.INBOUND,
        from_number="+14155550123",
        to_number="+14155550100",
        channel="test",
    )
    scenario = scenario_from(RECEPTIONIST)
    line = EmulatedLine(info, [WaitForTurn(), Speak(words), Silence(30)], tick=0.002)
    llm = OpenAILanguageModel(base_url=openai_server.base_url, api_key="sk-test")
    try:
        async with voice_call(line, scenario, providers) as call:
            result = await run_call(database, world.system, scenario, call, channel="test", llm=llm)
    finally:
        await llm.aclose()

    assert result.state.outcome == "completed"
    assert line.log.hangup == "completed"
    async with database.transaction(read_only=True) as session:
        note = (await session.scalars(select(Note))).one()
        page = await timeline.page(session, result.contact_id, limit=50)
        record = await session.get(CallRecord, result.call_id)
    assert (note.content, note.type, note.contact_id) == (
        "Leaking kitchen pipe",
        "warning",
        result.contact_id,
    )
    assert "note_added" in [e.kind for e in page.events]

    # The server heard the caller: one WAV upload of about the utterance's length.
    paths = openai_server.paths
    assert paths == [
        "/v1/audio/speech",
        "/v1/audio/transcriptions",
        "/v1/chat/completions",
        "/v1/audio/speech",
        "/v1/chat/completions",
        "/v1/audio/speech",
        "/v1/audio/speech",
    ]
    upload = openai_server.requests[1]["file"]
    assert isinstance(upload, Upload)
    with wave.open(io.BytesIO(upload.data)) as wav:
        assert (wav.getframerate(), wav.getnchannels(), wav.getsampwidth()) == (8000, 1, 2)
        seconds = wav.getnframes() / 8000
    assert len(words) / 16000 < seconds < len(words) / 16000 + 1.5
    # Speech was asked for sentence by sentence, as raw PCM for the phone line.
    spoken_texts = [
        body["input"]
        for path, body in zip(paths, openai_server.requests, strict=True)
        if path == "/v1/audio/speech"
    ]
    assert spoken_texts == [
        "Acme Plumbing, how can I help?",
        "I'm sorry to hear that.",
        "A plumber will call you today.",
        "Goodbye!",
    ]
    assert all(
        body["response_format"] == "pcm"
        for path, body in zip(paths, openai_server.requests, strict=True)
        if path == "/v1/audio/speech"
    )
    # The receptionist's audio went out on the line: about 3.2 s of it.
    assert 150 <= len(line.log.voiced_ticks) <= 175

    # The turn's latency is on the call's record, every mark in order.
    assert record is not None and record.state is not None
    (turn,) = record.state["latency"]
    assert 0 <= turn["transcript_ms"] <= turn["first_token_ms"] <= turn["first_audio_ms"]
    assert turn["first_audio_ms"] <= turn["first_frame_ms"]
    assert turn["stt_ms"] > 0 and turn["llm_ms"] > 0 and turn["tts_ms"] > 0
    assert 0 <= turn["service_ms"] <= turn["first_frame_ms"]


@needs_espeak
async def test_the_conversation_keeps_only_what_the_caller_heard_before_interrupting(
    database: Database,
    world: TeamWorld,
    openai_server: FakeOpenAI,
    providers: SpeechProviders,
) -> None:
    long_answer = (
        "Thanks for calling Acme Plumbing, we fix leaks, install boilers and clear drains "
        "all over the city. We also offer emergency visits at night."
    )
    openai_server.script += [
        speech_reply(0.5),  # the greeting
        Reply(text="hello"),
        Reply(text=long_answer),
        speech_reply(4.0),  # the first sentence: the caller talks over it
        Reply(text="what are your hours"),
        Reply(text="We open at eight. Goodbye!", tool_calls=[("end_call", "{}")]),
        speech_reply(0.6),
        speech_reply(0.3),
    ]
    info = CallInfo(
        call_id="audio-2",
        direction=Direction.INBOUND,
        from_number="+14155550124",
        to_number="+14155550100",
        channel="test",
    )
    scenario = scenario_from(RECEPTIONIST)
    script: list[CallerAction] = [
        WaitForTurn(),
        Speak(spoken("hello")),
        WaitForSpeech(),
        Silence(1.0),
        Speak(spoken("what are your hours")),
        Silence(30),
    ]
    line = EmulatedLine(info, script, tick=0.002)
    llm = OpenAILanguageModel(base_url=openai_server.base_url, api_key="sk-test")
    try:
        async with voice_call(line, scenario, providers) as call:
            result = await run_call(database, world.system, scenario, call, channel="test", llm=llm)
    finally:
        await llm.aclose()

    assert result.state.outcome == "completed"
    answers = [m for m in result.state.agent_messages if m["role"] == "assistant"]
    heard = answers[1]["content"]
    # About one second of a long sentence: a few words, marked as cut off.
    assert heard.endswith("—") and long_answer.startswith(heard[:-1])
    assert 1 <= len(heard.split()) <= 6
    # The model was told so: its next request carries the cut answer, then the question.
    last_chat = [
        body
        for path, body in zip(openai_server.paths, openai_server.requests, strict=True)
        if path == "/v1/chat/completions"
    ][-1]
    assert last_chat["messages"][-2:] == [
        {"role": "assistant", "content": heard},
        {"role": "user", "content": "what are your hours"},
    ]
    assert ("agent", heard) in [(t["speaker"], t["text"]) for t in result.state.transcript]
    assert len(line.log.clears) == 1
