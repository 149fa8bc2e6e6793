"""Exact 20 ms frames: the unit every carrier sends and expects.

Carriers do not promise frame sizes on the way in (Twilio says so), and
synthesis produces chunks of any length on the way out; the `Framer` cuts any
stream of bytes into whole frames and pads the tail with silence.
"""

from __future__ import annotations

SAMPLE_RATE = 8000
FRAME_MS = 20
FRAME_SECONDS = FRAME_MS / 1000
FRAME_SAMPLES = SAMPLE_RATE * FRAME_MS // 1000  # 160
ULAW_FRAME_BYTES = FRAME_SAMPLES  # one byte a sample
PCM_FRAME_BYTES = FRAME_SAMPLES * 2  # 16-bit samples


def frames_for(ms: float) -> int:
    """How many whole frames cover `ms` milliseconds (at least one for a positive span)."""
    if ms <= 0:
        return 0
    return max(1, round(ms / FRAME_MS))


class Framer:
    """Accumulates bytes and hands out whole frames of `frame_bytes`."""

    __slots__ = ("_buffer", "frame_bytes")

    def __init__(self, frame_bytes: int) -> None:
        if frame_bytes <= 0:
            raise ValueError("frame size must be positive")
        self.frame_bytes = frame_bytes
        self._buffer = bytearray()

    def push(self, data: bytes) -> list[bytes]:
        buffer = self._buffer
        if not buffer and len(data) == self.frame_bytes:
            return [bytes(data)]  # the common case: a carrier frame of the usual size
        buffer += data
        size = self.frame_bytes
        whole = len(buffer) - len(buffer) % size
        if not whole:
            return []
        frames = [bytes(buffer[i : i + size]) for i in range(0, whole, size)]
        del buffer[:whole]
        return frames

    def flush(self, pad: int) -> bytes | None:
        """The partial frame left over, padded with the byte `pad`, or None."""
        if not self._buffer:
            return None
        frame = bytes(self._buffer) + bytes([pad]) * (self.frame_bytes - len(self._buffer))
        self._buffer.clear()
        return frame

    def reset(self) -> None:
        self._buffer.clear()

    @property
    def pending(self) -> int:
        return len(self._buffer)
