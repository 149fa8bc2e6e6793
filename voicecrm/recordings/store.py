"""A folder of WAV recordings, named after the call they belong to.

Voicemail on an audio call (a Media Stream, Asterisk) is captured by the
service; its WAV file goes here and the call's timeline links to
`/api/v1/recordings/{name}`, which checks that the asker's team owns the
call. Names are made here and checked strictly on the way back, so a path
from a request can never leave the folder.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass
from pathlib import Path

from voicecrm.errors import InvalidInput
from voicecrm.voice.ports import PcmAudio
from voicecrm.voice.wav import wav_bytes

URL_PREFIX = "/api/v1/recordings/"
_NAME = re.compile(r"^(?P<channel>[a-z]+)-(?P<call>[A-Za-z0-9_.:-]{1,80})-(?P<n>\d{1,4})\.wav$")
_UNSAFE = re.compile(r"[^A-Za-z0-9_.:-]")


@dataclass(frozen=True, slots=True)
class RecordingName:
    channel: str
    external_call_id: str
    number: int

    @property
    def file_name(self) -> str:
        return f"{self.channel}-{self.external_call_id}-{self.number}.wav"

    @classmethod
    def parse(cls, name: str) -> RecordingName:
        match = _NAME.match(name)
        if match is None or ".." in name:
            raise InvalidInput(f"{name!r} is not a recording name")
        return cls(match["channel"], match["call"], int(match["n"]))


class RecordingStore:
    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def path(self, name: RecordingName) -> Path:
        return self.folder / name.file_name

    async def save(self, channel: str, external_call_id: str, pcm: bytes, sample_rate: int) -> str:
        """Write the recording (16-bit mono PCM) and return the URL the timeline links to.

        A call may leave several messages: each gets the next free number.
        """
        safe = _UNSAFE.sub("_", external_call_id)[:80] or "call"
        return await asyncio.to_thread(self._write, channel, safe, pcm, sample_rate)

    def _write(self, channel: str, call: str, pcm: bytes, sample_rate: int) -> str:
        self.folder.mkdir(parents=True, exist_ok=True)
        for number in range(1, 10_000):
            name = RecordingName(channel, call, number)
            try:
                with self.path(name).open("xb") as file:
                    file.write(wav_bytes(PcmAudio(pcm, sample_rate)))
            except FileExistsError:
                continue
            return URL_PREFIX + name.file_name
        raise InvalidInput(f"call {call} has too many recordings")
