"""Offline text-to-speech with the espeak-ng command: robotic, but always there.

A receptionist without a speech server must still be able to say "please hold"
or "leave a message". espeak-ng is a small Debian package, speaks about a hundred
languages and synthesises far faster than real time, so it serves as the voice
of last resort, and as the source of real speech for the audio tests.

It runs as a subprocess per utterance (never through a shell). The text goes in
on stdin, not as an argument: nothing in it can be mistaken for an option (a
text may start with "-"), and a caller's name or number in it does not show up
in the process list. espeak-ng writes a WAV stream on stdout as it synthesises;
its header is parsed and the samples are handed on as they arrive, so playback
starts after a few milliseconds whatever the length of the text.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import AsyncGenerator

from voicecrm.voice.ports import PcmAudio, SpeechProviderError, SpeechUnavailable

logger = logging.getLogger(__name__)

ESPEAK_EXECUTABLE = "espeak-ng"
DEFAULT_WORDS_PER_MINUTE = 160
# espeak-ng's own limits for -s.
MIN_WORDS_PER_MINUTE = 80
MAX_WORDS_PER_MINUTE = 450
_READ_SIZE = 16384
# A header chunk before the samples larger than this is not espeak-ng's.
_MAX_HEADER_CHUNK = 4096
_INSTALL_HINT = "install espeak-ng (apt-get install espeak-ng)"


class EspeakTextToSpeech:
    """Speech from espeak-ng: 22050 Hz mono 16-bit, in chunks as it is produced.

    The voice is the one asked for (an espeak-ng voice such as "en-gb" or
    "en-us+f3"), else `voice` given here, else the one for the language ("en-US"
    speaks with "en-us").
    A voice espeak-ng cannot speak with, say an OpenAI voice name left in a
    scenario that now runs offline, falls back to the language's voice with a
    warning: a robotic voice in the right language beats a failed call.

    Each `synthesize()` generator owns its espeak-ng process: closing the
    generator early (a barge-in) kills and reaps it.
    """

    def __init__(
        self,
        *,
        executable: str = ESPEAK_EXECUTABLE,
        words_per_minute: int = DEFAULT_WORDS_PER_MINUTE,
        voice: str | None = None,
    ) -> None:
        if not MIN_WORDS_PER_MINUTE <= words_per_minute <= MAX_WORDS_PER_MINUTE:
            raise ValueError(
                f"espeak-ng speaks between {MIN_WORDS_PER_MINUTE} and "
                f"{MAX_WORDS_PER_MINUTE} words per minute, not {words_per_minute}."
            )
        self._executable = executable
        self._words_per_minute = words_per_minute
        self._voice = voice.strip() if voice and voice.strip() else None
        self._known_voices: frozenset[str] | None = None

    @property
    def label(self) -> str:
        return "espeak-ng (offline, robotic voice)"

    async def synthesize(
        self, text: str, *, voice: str | None, language: str
    ) -> AsyncGenerator[PcmAudio, None]:
        """Yield the speech for `text` as espeak-ng writes it, in whole samples.

        Raises `SpeechUnavailable` when espeak-ng is missing or has no voice for
        `language`, `SpeechProviderError` when it fails otherwise.
        """
        if not text.strip():
            return
        fallback = language_voice(language)
        chosen = voice.strip() if voice and voice.strip() else self._voice
        voices = [chosen] if chosen else []
        if chosen and not await self._knows(chosen):
            # Some unknown names crash espeak-ng ("alloy" in 1.51): not even tried.
            logger.warning("espeak-ng has no voice %r; speaking with %r instead", chosen, fallback)
            voices = []
        if fallback not in voices:
            voices.append(fallback)
        for attempt, name in enumerate(voices):
            process = await self._start(name)
            wav = _WavStream()
            finished = False
            try:
                await _send(process, text)
                assert process.stdout is not None
                while data := await process.stdout.read(_READ_SIZE):
                    pcm = wav.feed(data)
                    if pcm:
                        yield PcmAudio(pcm, wav.sample_rate)
                _, stderr = await process.communicate()
                finished = True
            finally:
                if not finished:
                    await _reap(process)
            message = stderr.decode("utf-8", "replace").strip()
            if process.returncode == 0:
                if not wav.samples_seen:
                    raise SpeechProviderError(f"espeak-ng wrote no audio for voice {name!r}.")
                return
            failure = f"espeak-ng failed with exit status {process.returncode}" + (
                f": {message}" if message else "."
            )
            if wav.samples_seen:
                raise SpeechProviderError(failure)
            if attempt + 1 < len(voices):
                # Unknown voices fail before any audio, in ways that vary by name and
                # version (an error message, or a crash for "alloy" in 1.51).
                logger.warning(
                    "espeak-ng cannot speak with voice %r (%s); using %r instead",
                    name,
                    failure,
                    voices[-1],
                )
                continue
            if "voice" in message.lower():
                raise SpeechUnavailable(
                    f"espeak-ng has no voice for the language {language!r} (tried {name!r}): "
                    "check `espeak-ng --voices`, or configure a speech server."
                )
            raise SpeechProviderError(failure)

    async def _knows(self, voice: str) -> bool:
        """Whether espeak-ng lists `voice` (a language or voice file, "+variant" aside).

        Asked once per provider. If the list cannot be read, every voice is
        tried, and one that fails still falls back to the language's voice.
        """
        if self._known_voices is None:
            process = await self._exec("--voices")
            try:
                listing, _ = await process.communicate(b"")
            except BaseException:
                await _reap(process)
                raise
            self._known_voices = _voice_names(listing.decode("utf-8", "replace"))
        base = voice.split("+", 1)[0].lower()
        return not self._known_voices or base in self._known_voices

    async def _start(self, voice: str) -> asyncio.subprocess.Process:
        return await self._exec(
            "--stdout",
            "--stdin",
            "-b",
            "1",  # the input is UTF-8
            "-v",
            voice,
            "-s",
            str(self._words_per_minute),
        )

    async def _exec(self, *arguments: str) -> asyncio.subprocess.Process:
        try:
            return await asyncio.create_subprocess_exec(
                self._executable,
                *arguments,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
        except FileNotFoundError as err:
            raise SpeechUnavailable(
                f"The offline voice needs espeak-ng, which is not installed "
                f"({self._executable!r} not found): {_INSTALL_HINT}."
            ) from err
        except PermissionError as err:
            raise SpeechUnavailable(
                f"The offline voice cannot run {self._executable!r} ({err.strerror}): "
                f"{_INSTALL_HINT}."
            ) from err


def language_voice(language: str) -> str:
    """The espeak-ng voice for a language tag: "en-US" speaks with "en-us".

    espeak-ng falls back from an unknown region to the language itself
    ("de-AT" speaks German), so only an unknown language fails.
    """
    tag = language.strip().replace("_", "-").lower()
    return tag or "en"


def _voice_names(listing: str) -> frozenset[str]:
    """The names `-v` accepts, from `espeak-ng --voices`: languages ("en-us"), voice
    files ("gmw/en-US") and the other languages a voice covers ("en")."""
    names: set[str] = set()
    for line in listing.splitlines()[1:]:
        columns = line.split()
        if len(columns) >= 5:
            names.update((columns[1].lower(), columns[4].lower()))
            names.update(code.lower() for code in re.findall(r"\(([^\s()]+) \d+\)", line))
    return frozenset(names)


async def _send(process: asyncio.subprocess.Process, text: str) -> None:
    """Write the text and close stdin: with --stdin espeak-ng reads to the end first."""
    assert process.stdin is not None
    try:
        process.stdin.write(text.encode("utf-8", "replace"))
        await process.stdin.drain()
        process.stdin.close()
        await process.stdin.wait_closed()
    except (BrokenPipeError, ConnectionResetError):
        # It exited before reading (an unknown voice): its status and stderr say why.
        pass


async def _reap(process: asyncio.subprocess.Process) -> None:
    """Kill the process if it still runs and wait for it, draining its pipes.

    Draining matters: a pipe whose reader is paused never reports its end, and
    the subprocess transport would stay open until garbage collection.
    """
    if process.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
    if process.stdin is not None:
        process.stdin.close()
    await process.communicate()


class _WavStream:
    """Turns the WAV stream espeak-ng writes into bare samples as it arrives.

    Writing to a pipe, espeak-ng cannot seek back to fill in the lengths, so its
    RIFF and data sizes are placeholders (0x7ffff000): the header is read for
    the format only, and the samples run to the end of the stream.
    """

    def __init__(self) -> None:
        self._header = bytearray()
        self._in_data = False
        self._carry = b""
        self.sample_rate = 0
        self.samples_seen = False

    def feed(self, data: bytes) -> bytes:
        """The whole samples in `data` (with what was held back before); may be empty."""
        if not self._in_data:
            self._header += data
            rest = self._parse_header()
            if rest is None:
                return b""
            data = rest
        data = self._carry + data
        whole = len(data) - len(data) % 2
        self._carry = data[whole:]
        if whole:
            self.samples_seen = True
        return data[:whole]

    def _parse_header(self) -> bytes | None:
        """What follows the header once it is complete, or None while it is not."""
        buffer = self._header
        if len(buffer) < 12:
            return None
        if buffer[:4] != b"RIFF" or buffer[8:12] != b"WAVE":
            raise SpeechProviderError("espeak-ng wrote something other than a WAV stream.")
        position = 12
        has_format = False
        while True:
            if len(buffer) < position + 8:
                return None
            chunk_id = bytes(buffer[position : position + 4])
            size = int.from_bytes(buffer[position + 4 : position + 8], "little")
            body = position + 8
            if chunk_id == b"data":
                if not has_format:
                    raise SpeechProviderError("espeak-ng's WAV stream has no format chunk.")
                self._in_data = True
                rest = bytes(buffer[body:])
                self._header = bytearray()
                return rest
            if size > _MAX_HEADER_CHUNK:
                raise SpeechProviderError("espeak-ng's WAV stream has an unexpected header.")
            if len(buffer) < body + size + size % 2:
                return None
            if chunk_id == b"fmt ":
                self._read_format(bytes(buffer[body : body + size]))
                has_format = True
            position = body + size + size % 2

    def _read_format(self, chunk: bytes) -> None:
        if len(chunk) < 16:
            raise SpeechProviderError("espeak-ng's WAV format chunk is truncated.")
        encoding = int.from_bytes(chunk[0:2], "little")
        channels = int.from_bytes(chunk[2:4], "little")
        rate = int.from_bytes(chunk[4:8], "little")
        bits = int.from_bytes(chunk[14:16], "little")
        if encoding != 1 or channels != 1 or bits != 16 or rate <= 0:
            raise SpeechProviderError(
                f"espeak-ng wrote {bits}-bit audio with {channels} channels "
                f"(encoding {encoding}); only 16-bit mono PCM is supported."
            )
        self.sample_rate = rate
