"""A recording a scenario plays (`play:`), decoded for a line that only carries audio.

Asterisk and TwiML calls hand the URL to the carrier, which fetches and plays it.
A Twilio Media Stream cannot: the service fetches the file and sends it down the
stream itself, as it sends synthesised speech (with barge-in). WAV files of
16-bit PCM are read here, mono or stereo (its left channel) at any rate, and
mono mu-law or A-law WAV, as telephony prompts often are; anything else is
refused with a message saying what is wanted, rather than played as noise.
"""

from __future__ import annotations

import io
import struct
import wave
from array import array

from voicecrm.audio.codec import alaw_to_pcm16, ulaw_to_pcm16
from voicecrm.voice.ports import MediaUnavailable, PcmAudio

# Largest recording played down a line: 10 minutes of 16-bit stereo at 48 kHz.
MAX_RECORDING_BYTES = 10 * 60 * 48_000 * 2 * 2
_WAVE_FORMAT_ALAW, _WAVE_FORMAT_MULAW = 6, 7


def decode_wav(data: bytes, url: str) -> PcmAudio:
    """The recording's samples as 16-bit mono PCM; raises `MediaUnavailable`."""
    if data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise MediaUnavailable(f"{url} is not a WAV file: on a Media Stream, play takes WAV")
    companded = _companded(data)
    if companded is not None:
        return companded
    try:
        with wave.open(io.BytesIO(data)) as reader:
            channels, width, rate = (
                reader.getnchannels(),
                reader.getsampwidth(),
                reader.getframerate(),
            )
            frames = reader.readframes(reader.getnframes())
    except (wave.Error, EOFError) as err:
        raise MediaUnavailable(f"{url} is not a WAV file this service reads: {err}") from err
    if width != 2 or channels not in (1, 2):
        raise MediaUnavailable(
            f"{url} has {8 * width}-bit samples in {channels} channels: "
            "play takes 16-bit PCM, mono or stereo"
        )
    if channels == 2:
        frames = array("h", frames)[::2].tobytes()  # the left channel
    return PcmAudio(frames, rate)


def _companded(data: bytes) -> PcmAudio | None:
    """A mono mu-law or A-law WAV file (which `wave` does not read), decoded; else None."""
    fmt = data.find(b"fmt ", 12)
    body = data.find(b"data", 12)
    if fmt < 0 or body < 0 or len(data) < fmt + 24:
        return None
    tag, channels, rate = struct.unpack_from("<HHI", data, fmt + 8)
    if tag not in (_WAVE_FORMAT_ALAW, _WAVE_FORMAT_MULAW) or channels != 1:
        return None
    (size,) = struct.unpack_from("<I", data, body + 4)
    payload = data[body + 8 : body + 8 + size]
    decode = ulaw_to_pcm16 if tag == _WAVE_FORMAT_MULAW else alaw_to_pcm16
    return PcmAudio(decode(payload), rate)
