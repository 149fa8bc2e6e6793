"""The voice call over an emulated carrier: listening, speaking, barge-in, keys, timeouts.

The line plays one frame of the receptionist and delivers one frame of the
caller per tick, as a carrier does; ticks run ten times faster than real
time, and every assertion about timing counts ticks, so nothing here depends
on how busy the machine is.
"""

from __future__ import annotations

import wave
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import pytest

from tests.speech_audio import InstantSpeech, ScriptedTranscriber, needs_espeak, spoken
from voicecrm.audio.codec import rms, ulaw_to_pcm16
from voicecrm.audio.frames import ULAW_FRAME_BYTES
from voicecrm.calls.interface import CallEnded, CallInfo, Direction, InputKind
from voicecrm.recordings.store import RecordingStore
from voicecrm.telephony.simulator.audio_line import (
    CallerAction,
    EmulatedLine,
    HangUp,
    Press,
    Silence,
    Speak,
    WaitForSpeech,
    WaitForTurn,
)
from voicecrm.voice.call import VoiceCall
from voicecrm.voice.ports import PcmAudio, SpeechProviderError, Transcript
from voicecrm.voice.settings import VoiceSettings

INFO = CallInfo(
    call_id="v-1", direction=Direction.INBOUND, from_number="+15550100", to_number="+15550199"
)
TICK = 0.002  # ten times real time
BOTH = frozenset({InputKind.SPEECH, InputKind.DTMF})


def voiced_ticks(line: EmulatedLine, threshold: int = 500) -> list[int]:
    played = bytes(line.log.played)
    return [
        i
        for i in range(len(played) // ULAW_FRAME_BYTES)
        if rms(ulaw_to_pcm16(played[i * ULAW_FRAME_BYTES : (i + 1) * ULAW_FRAME_BYTES])) > threshold
    ]


def caller_onset(line: EmulatedLine) -> int:
    """The tick that carried the caller's first sound (rendered speech starts at once)."""
    first, _last = line.log.caller_speech[0]
    return first


def make_call(
    script: Sequence[CallerAction],
    *,
    answers: Sequence[str] = (),
    settings: VoiceSettings | None = None,
    lead_frames: int = 2,
) -> tuple[EmulatedLine, VoiceCall, InstantSpeech, ScriptedTranscriber]:
    line = EmulatedLine(INFO, script, tick=TICK, lead_frames=lead_frames)
    tts, stt = InstantSpeech(), ScriptedTranscriber(list(answers))
    return line, VoiceCall(line, stt=stt, tts=tts, settings=settings), tts, stt


@needs_espeak
async def test_the_caller_is_heard_transcribed_and_timed() -> None:
    words = spoken("I would like to book an appointment")
    _line, call, _tts, stt = make_call(
        [WaitForTurn(), Speak(words), WaitForTurn()], answers=["book an appointment"]
    )
    async with call:
        await call.say("Hello, how can I help?")
        answer = await call.gather(prompt=None, inputs=BOTH, input_timeout=5)
        await call.say("Sure.")
    assert answer.speech == "book an appointment"
    # The recogniser got the whole utterance: the speech, the preroll, the closing silence.
    (audio,) = stt.heard
    assert audio.sample_rate == 8000
    assert len(words) / 2 / 8000 < audio.seconds < len(words) / 2 / 8000 + 1.2
    (turn,) = call.latencies
    assert turn.speech_end <= turn.transcript_ready <= turn.first_audio <= turn.first_frame  # type: ignore[operator]
    assert turn.service_seconds is not None and turn.service_seconds >= 0


@needs_espeak
async def test_talking_over_the_receptionist_stops_playback_within_two_frames() -> None:
    interruption = spoken("sorry, can you repeat that")
    line, call, tts, _stt = make_call(
        [WaitForSpeech(), Silence(0.6), Speak(interruption), WaitForTurn()],
        answers=["sorry can you repeat that"],
    )
    long_text = "Thank you for calling the clinic. " + "We are open every day of the week. " * 3
    async with call:
        spoken_back = await call.say(long_text)
        answer = await call.gather(prompt=None, inputs=BOTH, input_timeout=5)

    onset = caller_onset(line)
    (cleared,) = line.log.clears
    assert onset <= cleared <= onset + 2  # cut within 40 ms of the caller's first word
    assert max(voiced_ticks(line)) <= onset + 2  # and nothing was played after it
    assert tts.closed_early == 1  # synthesis stopped too
    # The caller heard about 0.6 s of a ~6 s text: the record says so.
    assert spoken_back.interrupted
    assert long_text.startswith(spoken_back.heard.rstrip("—"))
    assert 1 <= len(spoken_back.heard.split()) <= 4
    # And the interruption itself is the caller's next answer.
    assert answer.speech == "sorry can you repeat that"


@needs_espeak
async def test_without_barge_in_the_receptionist_finishes_its_sentence() -> None:
    line, call, _tts, _stt = make_call(
        [WaitForSpeech(), Speak(spoken("hello")), WaitForTurn()],
        answers=["hello"],
        settings=VoiceSettings(barge_in=False),
    )
    async with call:
        said = await call.say("One two three four five six.")
    assert not said.interrupted and said.heard == "One two three four five six."
    assert line.log.clears == []
    assert len(voiced_ticks(line)) >= 85  # six words at 0.3 s: 90 frames, all played


async def test_a_key_pressed_during_the_prompt_stops_it_and_answers_the_menu() -> None:
    line, call, _tts, _stt = make_call([WaitForSpeech(), Silence(0.2), Press("2"), WaitForTurn()])
    async with call:
        answer = await call.gather(
            prompt="For sales press one. For support press two. Or stay on the line.",
            inputs=BOTH,
            input_timeout=5,
            num_digits=1,
        )
    assert answer.digits == "2"
    ((pressed, _digit),) = line.log.keys
    assert line.log.clears and line.log.clears[0] <= pressed + 1
    assert max(voiced_ticks(line)) <= pressed + 2


async def test_digits_end_on_the_finish_key_or_after_the_inter_digit_timeout() -> None:
    _line, call, _tts, _stt = make_call([Press("12"), Press("3#"), Press("45"), Silence(10)])
    async with call:
        first = await call.gather(prompt=None, inputs=BOTH, input_timeout=5, finish_on_key="#")
        second = await call.gather(prompt=None, inputs=BOTH, input_timeout=5, finish_on_key="#")
    assert first.digits == "123"
    assert second.digits == "45"  # no '#': the 3 s inter-digit timeout ended it


async def test_no_input_times_out_after_that_much_caller_audio() -> None:
    line, call, _tts, _stt = make_call([Silence(30)])
    async with call:
        started = line.ticks
        answer = await call.gather(prompt=None, inputs=BOTH, input_timeout=1.5)
        waited = line.ticks - started
    assert answer.empty
    assert 75 <= waited <= 80  # 1.5 s of 20 ms frames (and the ticks it took to return)


@needs_espeak
async def test_speech_is_ignored_where_only_keys_count() -> None:
    _line, call, _tts, stt = make_call([Speak(spoken("operator please")), Press("0"), Silence(5)])
    async with call:
        answer = await call.gather(
            prompt=None, inputs=frozenset({InputKind.DTMF}), input_timeout=5, num_digits=1
        )
    assert answer.digits == "0" and stt.heard == []


async def test_a_hang_up_ends_every_verb() -> None:
    _line, call, _tts, _stt = make_call([Silence(0.1), HangUp()])
    async with call:
        with pytest.raises(CallEnded):
            await call.gather(prompt=None, inputs=BOTH, input_timeout=5)
        with pytest.raises(CallEnded):
            await call.say("Anyone there?")


async def test_sentences_stream_into_speech_without_gaps() -> None:
    # A carrier buffer of 200 ms (20 ms at this speed) absorbs the test machine's hiccups.
    line, call, tts, _stt = make_call([Silence(10)], lead_frames=10)

    async def sentences() -> AsyncIterator[str]:
        for text in ("Hello there.", "We can see you on Tuesday.", "Does ten work?"):
            yield text

    async with call:
        said = await call.speak(sentences())
    assert said.heard == "Hello there. We can see you on Tuesday. Does ten work?"
    assert tts.said == ["Hello there.", "We can see you on Tuesday.", "Does ten work?"]
    ticks = voiced_ticks(line)
    # 11 words at 0.3 s = 165 frames, played back to back: at most a frame of gap.
    assert len(ticks) >= 160 and ticks[-1] - ticks[0] <= len(ticks) + 3


@needs_espeak
async def test_voicemail_records_after_the_beep_until_the_caller_stops() -> None:
    message = spoken("please call me back about my order")
    line, call, _tts, stt = make_call(
        [WaitForTurn(quiet_seconds=0.2), Speak(message), Silence(8)],
        answers=["please call me back about my order"],
    )
    async with call:
        recording = await call.record(max_seconds=30)
        assert recording is not None
        words = await recording.words()
        await call.say("Thanks, goodbye.")  # ended by the silence: the caller is still there
    assert words == "please call me back about my order"
    assert len(message) / 16000 < recording.duration_seconds < len(message) / 16000 + 1.5
    assert len(voiced_ticks(line)) >= 14  # the 300 ms beep went out first
    (audio,) = stt.heard  # the recording itself was transcribed
    assert round(audio.seconds, 1) == recording.duration_seconds


@needs_espeak
async def test_a_pause_is_part_of_the_voicemail_and_only_a_long_silence_ends_it() -> None:
    first, second = spoken("this is Jane"), spoken("about my order")
    line, call, _tts, stt = make_call(
        [WaitForTurn(quiet_seconds=0.2), Speak(first), Silence(2), Speak(second), Silence(30)],
        answers=["this is jane about my order"],
    )
    async with call:
        recording = await call.record(max_seconds=60)
        assert recording is not None
        frames_when_ended = line.ticks
        words = await recording.words()
    said = (len(first) + len(second)) / 16000 + 2
    assert said < recording.duration_seconds < said + 1.5  # the closing silence is not kept
    assert frames_when_ended * 0.02 < said + 8  # five seconds of silence ended it, not the line
    assert words == "this is jane about my order"
    (audio,) = stt.heard  # one message, both utterances
    assert round(audio.seconds, 1) == recording.duration_seconds


@needs_espeak
async def test_a_scenario_may_end_voicemails_on_a_shorter_silence() -> None:
    first, second = spoken("this is Jane"), spoken("about my order")
    _line, call, _tts, _stt = make_call(
        [WaitForTurn(quiet_seconds=0.2), Speak(first), Silence(2), Speak(second), Silence(30)],
        answers=["this is jane"],
    )
    async with call:
        recording = await call.record(max_seconds=60, silence_seconds=1)
        assert recording is not None
        await recording.words()
    said = len(first) / 16000
    assert said < recording.duration_seconds < said + 1.5  # the 2 s pause ended it


@needs_espeak
async def test_a_caller_hanging_up_after_the_message_keeps_it() -> None:
    message = spoken("please call me back")
    _line, call, _tts, _stt = make_call(
        [WaitForTurn(quiet_seconds=0.2), Speak(message), Silence(1)],
        answers=["please call me back"],
    )
    async with call:
        recording = await call.record(max_seconds=60)
        assert recording is not None
        words = await recording.words()
        with pytest.raises(CallEnded):
            await call.say("Thanks, goodbye.")
    assert words == "please call me back"
    assert len(message) / 16000 < recording.duration_seconds < len(message) / 16000 + 1.5


class DownTranscriber(ScriptedTranscriber):
    async def transcribe(
        self, audio: PcmAudio, *, language: str, hints: tuple[str, ...] = ()
    ) -> Transcript:
        self.heard.append(audio)
        raise SpeechProviderError("the recogniser is down")


@needs_espeak
async def test_a_voicemail_the_recogniser_fails_on_is_kept_without_words() -> None:
    line = EmulatedLine(
        INFO, [WaitForTurn(quiet_seconds=0.2), Speak(spoken("call me")), Silence(5)], tick=TICK
    )
    stt = DownTranscriber()
    async with VoiceCall(line, stt=stt, tts=InstantSpeech()) as call:
        recording = await call.record(max_seconds=30)
        assert recording is not None
        words = await recording.words()
    assert words is None
    assert recording.duration_seconds > 0 and len(stt.heard) == 1  # it was tried, once


async def test_voicemail_with_nothing_said_is_none() -> None:
    _line, call, _tts, _stt = make_call([Silence(5)])
    async with call:
        assert await call.record(max_seconds=1) is None


@needs_espeak
async def test_the_echo_test_plays_the_callers_own_voice_back() -> None:
    words = spoken("testing one two three")
    line, call, _tts, _stt = make_call([Speak(words), Silence(3)])
    async with call:
        await call.echo(2.0)
    heard = voiced_ticks(line)
    assert heard, "the caller's voice came back"
    first_caller_tick = line.log.caller_speech[0][0]
    # Back within a few frames. The line runs at ten times real time (2 ms a frame), so
    # the bound leaves room for a busy machine: 10 frames are 200 ms of the call, still
    # far below the 3 s a caller speaks here and the 2 s the echo lasts.
    assert heard[0] - first_caller_tick <= 10


async def test_the_callers_raw_audio_is_available_until_they_hang_up() -> None:
    _line, call, _tts, _stt = make_call([Silence(0.2), HangUp()])
    async with call:
        frames = [frame async for frame in call.audio_in()]
    assert 9 <= len(frames) <= 11 and all(len(f) == 160 for f in frames)


@needs_espeak
async def test_a_voicemail_is_kept_as_a_wav_file_named_after_the_call(tmp_path: Path) -> None:
    message = spoken("please call me back")
    line = EmulatedLine(
        INFO, [WaitForTurn(quiet_seconds=0.2), Speak(message), Silence(5)], tick=TICK
    )
    store = RecordingStore(tmp_path)
    call = VoiceCall(
        line,
        stt=ScriptedTranscriber(["please call me back"]),
        tts=InstantSpeech(),
        recordings=store,
    )
    async with call:
        recording = await call.record(max_seconds=30)
    assert recording is not None
    assert recording.url == "/api/v1/recordings/unknown-v-1-1.wav"
    with wave.open(str(tmp_path / "unknown-v-1-1.wav")) as wav:
        assert wav.getframerate() == 8000
        assert abs(wav.getnframes() / 8000 - recording.duration_seconds) < 0.1
