"""Real-time pacing of outgoing frames, for lines that must send no faster than they play.

A carrier that buffers what it is sent (Twilio) or plays packets as they come
(RTP to Asterisk) should be fed at 50 frames a second, a few frames ahead:
ahead enough to ride out a busy event loop, near enough that a barge-in
leaves little to clear, and that "sent minus elapsed" tells which frames the
caller has heard. This is the clock arithmetic; the line awaits the delays.
"""

from __future__ import annotations

from voicecrm.audio.frames import FRAME_SECONDS


class PlayoutClock:
    """When the next frame may go out, and how many sent frames are still unplayed."""

    __slots__ = ("_frame_seconds", "_lead", "_sent", "_start")

    def __init__(self, *, lead_frames: int = 5, frame_seconds: float = FRAME_SECONDS) -> None:
        if lead_frames < 1 or frame_seconds <= 0:
            raise ValueError("pacing needs a lead of at least one frame and a positive frame")
        self._lead = lead_frames
        self._frame_seconds = frame_seconds
        self._start: float | None = None
        self._sent = 0

    def delay(self, now: float) -> float:
        """Seconds to wait before sending the next frame (0: send now)."""
        if self._start is None or self._played(now) >= self._sent:
            return 0.0  # idle, or the line ran dry: start a new stretch of speech now
        due = self._start + (self._sent + 1 - self._lead) * self._frame_seconds
        return max(0.0, due - now)

    def sent(self, now: float) -> None:
        """Record a frame handed to the carrier."""
        if self._start is None or self._played(now) >= self._sent:
            self._start, self._sent = now, 0  # a new stretch starts playing now
        self._sent += 1

    def unplayed(self, now: float) -> int:
        if self._start is None:
            return 0
        return max(0, self._sent - self._played(now))

    def drained_at(self) -> float | None:
        """When the last frame sent finishes playing."""
        if self._start is None:
            return None
        return self._start + self._sent * self._frame_seconds

    def reset(self) -> None:
        """The carrier dropped what was queued (a clear): nothing is unplayed any more."""
        self._start = None
        self._sent = 0

    def _played(self, now: float) -> int:
        assert self._start is not None
        return int((now - self._start) / self._frame_seconds + 1e-6)  # float-safe floor
