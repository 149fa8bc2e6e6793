"""The emulated carrier keeps its own arithmetic when the machine is busy.

Every timing assertion in the voice tests counts the line's ticks, so the
line must not change what the caller hears when the event loop stalls (a
garbage collection, a loaded CI machine): a late tick is late, not the start
of a burst of ticks that play silence while the receptionist's frames wait.
"""

from __future__ import annotations

import asyncio
import time

from voicecrm.audio.frames import ULAW_FRAME_BYTES
from voicecrm.calls.interface import CallInfo, Direction
from voicecrm.telephony.simulator.audio_line import EmulatedLine, HangUp, Silence
from voicecrm.voice.line import Media

INFO = CallInfo(
    call_id="e-1", direction=Direction.INBOUND, from_number="+15550100", to_number="+15550199"
)
VOICED = b"\x10" * ULAW_FRAME_BYTES  # loud in mu-law
FRAMES = 40


async def test_a_stalled_loop_delays_the_ticks_instead_of_playing_silence_in_a_burst() -> None:
    line = EmulatedLine(INFO, [Silence(2.0), HangUp()], tick=0.002, lead_frames=2)

    async def receptionist() -> None:
        for _ in range(FRAMES):
            await line.send(VOICED)

    speaking = asyncio.create_task(receptionist())
    async for event in line.events():  # the caller hangs up after 2 s (100 ticks)
        if isinstance(event, Media) and line.ticks == 10:
            # The stimulus, not a wait: the loop is blocked for 25 ticks' worth of time.
            time.sleep(0.05)  # noqa: ASYNC251
    await speaking

    first = line.log.voiced_ticks[0]
    assert line.log.voiced_ticks == list(range(first, first + FRAMES))  # no silent gap
