"""Streaming sample-rate conversion with libsoxr.

Text-to-speech arrives at 16, 22.05 or 24 kHz in chunks of any size; the
phone line wants 8 kHz. A stream resampler keeps its filter state between
chunks, so chunk boundaries leave no clicks, and `flush` drains the filter's
delay at the end of an utterance.
"""

from __future__ import annotations

import numpy as np
import soxr


class StreamResampler:
    def __init__(self, in_rate: int, out_rate: int, *, quality: str = "HQ") -> None:
        if in_rate <= 0 or out_rate <= 0:
            raise ValueError("sample rates must be positive")
        self.in_rate = in_rate
        self.out_rate = out_rate
        self._stream = (
            None
            if in_rate == out_rate
            else soxr.ResampleStream(in_rate, out_rate, 1, dtype="int16", quality=quality)
        )

    def process(self, pcm: bytes, *, last: bool = False) -> bytes:
        """Resample a chunk of 16-bit PCM; `last` flushes what the filter holds back."""
        if self._stream is None:
            return pcm
        samples = np.frombuffer(pcm, dtype=np.int16)
        out: np.ndarray = self._stream.resample_chunk(samples, last=last)
        return out.astype(np.int16, copy=False).tobytes()

    def flush(self) -> bytes:
        return self.process(b"", last=True)


def resample(pcm: bytes, in_rate: int, out_rate: int) -> bytes:
    """Resample a whole clip at once."""
    if in_rate == out_rate:
        return pcm
    samples = np.frombuffer(pcm, dtype=np.int16)
    out: np.ndarray = soxr.resample(samples, in_rate, out_rate)
    return out.astype(np.int16, copy=False).tobytes()
