"""Comfort noise: a faint hiss for the moments the receptionist is silent.

Dead digital silence makes callers think the line dropped (and some RTP
peers want packets without gaps); a line that sends audio continuously can
send these frames when it has nothing to say. They are made once, from
seeded noise, and cycled: no random numbers on the hot path.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import numpy as np

from voicecrm.audio.codec import pcm16_to_ulaw
from voicecrm.audio.frames import FRAME_SAMPLES


def comfort_noise(level_dbfs: float = -60.0, *, frames: int = 50, seed: int = 7) -> Iterator[bytes]:
    """Endless 20 ms mu-law frames of white noise at `level_dbfs` RMS."""
    if level_dbfs > -20:
        raise ValueError("comfort noise must be faint (at most -20 dBFS)")
    rms = 32767 * 10 ** (level_dbfs / 20)
    noise = np.random.default_rng(seed).normal(0.0, rms, frames * FRAME_SAMPLES)
    pcm = np.clip(noise, -32768, 32767).astype("<i2").tobytes()
    size = FRAME_SAMPLES * 2
    cycle = [pcm16_to_ulaw(pcm[i : i + size]) for i in range(0, len(pcm), size)]
    return itertools.cycle(cycle)
