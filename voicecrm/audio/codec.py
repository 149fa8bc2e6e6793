"""G.711 mu-law and A-law to and from 16-bit PCM.

The conversions are the C routines of `audioop`: in the standard library up
to Python 3.12, and the maintained `audioop-lts` port (same module name) from
3.13, which the package depends on there. The standard library's copy warns
that it is deprecated on import; that warning is about its removal, which the
port covers, so it is silenced here once.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from enum import StrEnum

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop

SAMPLE_WIDTH = 2  # bytes per 16-bit PCM sample


class Encoding(StrEnum):
    ULAW = "ulaw"
    ALAW = "alaw"


def ulaw_to_pcm16(data: bytes) -> bytes:
    return audioop.ulaw2lin(data, SAMPLE_WIDTH)


def pcm16_to_ulaw(pcm: bytes) -> bytes:
    return audioop.lin2ulaw(pcm, SAMPLE_WIDTH)


def alaw_to_pcm16(data: bytes) -> bytes:
    return audioop.alaw2lin(data, SAMPLE_WIDTH)


def pcm16_to_alaw(pcm: bytes) -> bytes:
    return audioop.lin2alaw(pcm, SAMPLE_WIDTH)


def rms(pcm: bytes) -> int:
    """Root-mean-square level of 16-bit PCM (0..32767)."""
    return int(audioop.rms(pcm, SAMPLE_WIDTH))


_DECODERS: dict[Encoding, Callable[[bytes], bytes]] = {
    Encoding.ULAW: ulaw_to_pcm16,
    Encoding.ALAW: alaw_to_pcm16,
}
_ENCODERS: dict[Encoding, Callable[[bytes], bytes]] = {
    Encoding.ULAW: pcm16_to_ulaw,
    Encoding.ALAW: pcm16_to_alaw,
}
# The byte each encoding uses for digital silence (PCM 0).
SILENCE_BYTE: dict[Encoding, int] = {Encoding.ULAW: 0xFF, Encoding.ALAW: 0xD5}


def decoder(encoding: Encoding) -> Callable[[bytes], bytes]:
    return _DECODERS[encoding]


def encoder(encoding: Encoding) -> Callable[[bytes], bytes]:
    return _ENCODERS[encoding]


def silence(encoding: Encoding, samples: int) -> bytes:
    return bytes([SILENCE_BYTE[encoding]]) * samples
