"""Voice activity and end of utterance on real speech (espeak-ng), frame by frame."""

from __future__ import annotations

from tests.speech_audio import needs_espeak, spoken, tone
from voicecrm.audio.codec import pcm16_to_ulaw, rms, ulaw_to_pcm16
from voicecrm.audio.frames import PCM_FRAME_BYTES
from voicecrm.audio.turns import (
    SpeechDiscarded,
    SpeechEnded,
    SpeechStarted,
    TurnDetector,
    TurnEvent,
    TurnSettings,
)
from voicecrm.audio.vad import WebRtcVad

SILENT = b"\x00" * PCM_FRAME_BYTES


def frames(pcm: bytes) -> list[bytes]:
    """Through the phone codec and back, cut in 20 ms frames, as the pipeline sees them."""
    pcm = ulaw_to_pcm16(pcm16_to_ulaw(pcm))
    pcm += b"\x00" * (-len(pcm) % PCM_FRAME_BYTES)
    return [pcm[i : i + PCM_FRAME_BYTES] for i in range(0, len(pcm), PCM_FRAME_BYTES)]


def run(detector: TurnDetector, feed: list[bytes]) -> list[TurnEvent]:
    vad = WebRtcVad()
    events = [detector.feed(f, vad.is_speech(f)) for f in feed]
    return [e for e in events if e is not None]


def first_loud_frame(feed: list[bytes]) -> int:
    return next(i for i, f in enumerate(feed) if rms(f) > 500)


def last_loud_frame(feed: list[bytes]) -> int:
    return max(i for i, f in enumerate(feed) if rms(f) > 500)


@needs_espeak
def test_an_utterance_starts_at_the_speech_and_ends_after_the_silence_threshold() -> None:
    speech = frames(spoken("I would like to book an appointment for tomorrow"))
    feed = [SILENT] * 25 + speech + [SILENT] * 60
    onset = 25 + first_loud_frame(speech)
    events = run(TurnDetector(TurnSettings(end_silence_ms=600)), feed)

    started, ended = events
    assert isinstance(started, SpeechStarted) and isinstance(ended, SpeechEnded)
    assert onset - 1 <= started.frame <= onset + 2
    # Ended 600 ms (30 frames) after the last voiced frame, and no earlier: pauses
    # between words are shorter than the threshold.
    assert ended.end_frame == ended.last_voiced_frame + 30
    last_loud = 25 + last_loud_frame(speech)
    assert last_loud - 3 <= ended.last_voiced_frame <= last_loud + 5
    # The utterance carries the preroll (200 ms) before the start, for the recogniser.
    assert len(ended.pcm) == (ended.end_frame - started.frame + 1 + 10) * PCM_FRAME_BYTES


@needs_espeak
def test_a_shorter_silence_threshold_splits_at_pauses_between_phrases() -> None:
    first, second = frames(spoken("yes")), frames(spoken("that is right"))
    feed = [SILENT] * 10 + first + [SILENT] * 20 + second + [SILENT] * 40
    patient = run(TurnDetector(TurnSettings(end_silence_ms=800)), feed)
    hasty = run(TurnDetector(TurnSettings(end_silence_ms=300)), feed)
    assert [type(e) for e in patient] == [SpeechStarted, SpeechEnded]
    assert [type(e) for e in hasty] == [SpeechStarted, SpeechEnded] * 2


def test_a_click_is_not_an_utterance() -> None:
    click = frames(tone(0.06, rate=8000, hz=300, level=20000))
    events = run(
        TurnDetector(TurnSettings(min_speech_ms=120)), [SILENT] * 5 + click + [SILENT] * 50
    )
    assert [type(e) for e in events] in ([], [SpeechStarted, SpeechDiscarded])


def test_silence_and_quiet_hiss_are_never_speech() -> None:
    hiss = frames(tone(2.0, rate=8000, hz=3000, level=60))
    assert run(TurnDetector(), [SILENT] * 100 + hiss) == []


@needs_espeak
def test_a_long_monologue_is_cut_at_the_maximum_utterance_length() -> None:
    speech = frames(spoken("one two three four five six seven eight nine ten " * 2))
    events = run(TurnDetector(TurnSettings(max_utterance_seconds=2.0)), speech + [SILENT] * 60)
    ends = [e for e in events if isinstance(e, SpeechEnded)]
    assert len(ends) >= 2
    assert ends[0].end_frame - ends[0].start_frame + 1 == 100  # 2 s of frames
