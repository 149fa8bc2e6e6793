"""Pacing arithmetic for carriers fed at real time, and comfort noise."""

from __future__ import annotations

import itertools

import pytest

from voicecrm.audio.codec import rms, ulaw_to_pcm16
from voicecrm.audio.comfort import comfort_noise
from voicecrm.audio.pacing import PlayoutClock
from voicecrm.audio.vad import WebRtcVad


def test_the_first_frames_go_at_once_then_one_every_20_ms_after_the_lead() -> None:
    clock = PlayoutClock(lead_frames=3)
    now = 100.0
    waits = []
    for _ in range(8):
        wait = clock.delay(now)
        waits.append(round(wait, 6))
        now += wait
        clock.sent(now)
    # Three frames ahead at once, then each as one finishes playing.
    assert waits == [0.0, 0.0, 0.0, 0.02, 0.02, 0.02, 0.02, 0.02]
    assert clock.unplayed(now) == 3
    assert clock.drained_at() == pytest.approx(now + 0.06)


def test_unplayed_frames_count_down_as_time_passes_and_a_clear_empties_them() -> None:
    clock = PlayoutClock(lead_frames=5)
    for _ in range(5):
        clock.sent(0.0)
    assert [clock.unplayed(t) for t in (0.0, 0.021, 0.041, 0.2)] == [5, 4, 3, 0]
    clock.reset()
    assert clock.unplayed(0.0) == 0 and clock.delay(0.0) == 0.0


def test_after_a_silence_a_new_stretch_starts_playing_at_once() -> None:
    clock = PlayoutClock(lead_frames=2)
    clock.sent(0.0)
    clock.sent(0.0)
    assert clock.delay(5.0) == 0.0  # long drained: no waiting for an old schedule
    clock.sent(5.0)
    assert clock.unplayed(5.0) == 1


def test_comfort_noise_is_faint_steady_and_never_speech() -> None:
    frames = list(itertools.islice(comfort_noise(-60), 200))
    assert all(len(f) == 160 for f in frames)
    levels = [rms(ulaw_to_pcm16(f)) for f in frames]
    assert all(10 <= level <= 60 for level in levels)  # -60 dBFS is about 33
    vad = WebRtcVad()  # the detector the pipeline uses: its level floor ignores the hiss
    assert not any(vad.is_speech(ulaw_to_pcm16(f)) for f in frames)
    with pytest.raises(ValueError):
        comfort_noise(-6)
