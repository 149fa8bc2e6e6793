"""RTP packets (RFC 3550) and telephone events (RFC 4733): parsing and building.

Pure functions over bytes, no I/O. A packet is a 12-byte fixed header (version
2, padding bit, extension bit, CSRC count, marker, payload type, 16-bit
sequence number, 32-bit timestamp, SSRC), then the CSRC list, an optional
header extension (skipped, but kept), the payload and optional padding whose
last byte says how long it is. Sequence numbers and timestamps wrap; the
helpers below do that arithmetic so callers never compare them directly.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from voicecrm.errors import VoiceCRMError

VERSION = 2
PCMU = 0  # G.711 mu-law, 8 kHz
PCMA = 8  # G.711 A-law, 8 kHz
TELEPHONE_EVENT = 101  # the usual dynamic payload type for RFC 4733 events

SEQUENCE_MODULO = 1 << 16
TIMESTAMP_MODULO = 1 << 32

_HEADER = struct.Struct("!BBHII")
_EXTENSION = struct.Struct("!HH")
_EVENT = struct.Struct("!BBH")

# RFC 4733 section 3.2: events 0-15 are the DTMF keys.
DTMF_DIGITS = "0123456789*#ABCD"


class RtpError(VoiceCRMError):
    """A datagram that is not a well-formed RTP packet (or telephone event)."""

    title = "Malformed RTP packet"


class TruncatedPacket(RtpError):
    title = "Truncated RTP packet"


class UnsupportedVersion(RtpError):
    title = "Unsupported RTP version"


class BadPadding(RtpError):
    title = "Bad RTP padding"


@dataclass(frozen=True, slots=True)
class RtpPacket:
    payload_type: int
    sequence: int
    timestamp: int
    ssrc: int
    payload: bytes = b""
    marker: bool = False
    csrcs: tuple[int, ...] = ()
    # (profile-defined 16 bits, extension data: a multiple of 4 bytes), or None.
    extension: tuple[int, bytes] | None = None

    def __post_init__(self) -> None:
        if not 0 <= self.payload_type < 128:
            raise RtpError(f"payload type {self.payload_type} is not 0-127")
        if not 0 <= self.sequence < SEQUENCE_MODULO:
            raise RtpError(f"sequence number {self.sequence} is not 16-bit")
        if not 0 <= self.timestamp < TIMESTAMP_MODULO:
            raise RtpError(f"timestamp {self.timestamp} is not 32-bit")
        if not 0 <= self.ssrc < TIMESTAMP_MODULO:
            raise RtpError(f"SSRC {self.ssrc} is not 32-bit")
        if len(self.csrcs) > 15:
            raise RtpError("at most 15 CSRCs fit in a header")
        if self.extension is not None and len(self.extension[1]) % 4:
            raise RtpError("a header extension is a whole number of 32-bit words")

    def to_bytes(self, *, padding: int = 0) -> bytes:
        """The packet on the wire, with `padding` bytes of padding (0 for none)."""
        return build(self, padding=padding)


def parse(data: bytes) -> RtpPacket:
    """One RTP packet from a datagram; raises an `RtpError` for anything malformed."""
    size = len(data)
    if size < _HEADER.size:
        raise TruncatedPacket(f"{size} bytes is shorter than the 12-byte RTP header")
    first, second, sequence, timestamp, ssrc = _HEADER.unpack_from(data)
    version = first >> 6
    if version != VERSION:
        raise UnsupportedVersion(f"RTP version {version}, expected {VERSION}")
    end = size
    if first & 0x20:
        pad = data[-1]
        if pad == 0:
            raise BadPadding("the padding bit is set but the padding length is zero")
        end -= pad
    offset = _HEADER.size
    csrc_count = first & 0x0F
    csrcs: tuple[int, ...] = ()
    if csrc_count:
        if offset + 4 * csrc_count > end:
            raise TruncatedPacket(f"{csrc_count} CSRCs do not fit in {size} bytes")
        csrcs = struct.unpack_from(f"!{csrc_count}I", data, offset)
        offset += 4 * csrc_count
    extension: tuple[int, bytes] | None = None
    if first & 0x10:
        if offset + _EXTENSION.size > end:
            raise TruncatedPacket("the header extension does not fit in the packet")
        profile, words = _EXTENSION.unpack_from(data, offset)
        offset += _EXTENSION.size
        if offset + 4 * words > end:
            raise TruncatedPacket(f"a header extension of {words} words does not fit")
        extension = (profile, bytes(data[offset : offset + 4 * words]))
        offset += 4 * words
    if offset > end:
        raise BadPadding(f"padding of {data[-1]} bytes overlaps the header")
    return RtpPacket(
        payload_type=second & 0x7F,
        sequence=sequence,
        timestamp=timestamp,
        ssrc=ssrc,
        payload=bytes(data[offset:end]),
        marker=bool(second & 0x80),
        csrcs=tuple(csrcs),
        extension=extension,
    )


def build(packet: RtpPacket, *, padding: int = 0) -> bytes:
    """`packet` on the wire; `padding` (0-255) bytes of padding at the end."""
    if not 0 <= padding < 256:
        raise RtpError("padding is 0 to 255 bytes")
    first = VERSION << 6 | len(packet.csrcs)
    if padding:
        first |= 0x20
    if packet.extension is not None:
        first |= 0x10
    second = packet.payload_type | (0x80 if packet.marker else 0)
    parts = [_HEADER.pack(first, second, packet.sequence, packet.timestamp, packet.ssrc)]
    if packet.csrcs:
        parts.append(struct.pack(f"!{len(packet.csrcs)}I", *packet.csrcs))
    if packet.extension is not None:
        profile, data = packet.extension
        parts.append(_EXTENSION.pack(profile, len(data) // 4))
        parts.append(data)
    parts.append(packet.payload)
    if padding:
        parts.append(bytes(padding - 1) + bytes([padding]))
    return b"".join(parts)


# ------------------------------------------------------------------ arithmetic
def sequence_add(sequence: int, n: int) -> int:
    return (sequence + n) % SEQUENCE_MODULO


def timestamp_add(timestamp: int, n: int) -> int:
    return (timestamp + n) % TIMESTAMP_MODULO


def sequence_delta(newer: int, older: int) -> int:
    """How far `newer` is ahead of `older`, across the wrap: -32768..32767."""
    return (newer - older + SEQUENCE_MODULO // 2) % SEQUENCE_MODULO - SEQUENCE_MODULO // 2


# ------------------------------------------------------------ RFC 4733 events
class BadTelephoneEvent(RtpError):
    title = "Malformed telephone event"


@dataclass(frozen=True, slots=True)
class TelephoneEvent:
    event: int
    end: bool
    volume: int  # 0 to 63: -dBm0
    duration: int  # in timestamp units (samples)

    @property
    def digit(self) -> str | None:
        """The DTMF key, or None for other events (tones, flash)."""
        return DTMF_DIGITS[self.event] if self.event < len(DTMF_DIGITS) else None

    def to_bytes(self) -> bytes:
        return _EVENT.pack(self.event, (0x80 if self.end else 0) | self.volume, self.duration)


def parse_telephone_event(payload: bytes) -> TelephoneEvent:
    """The first event of an RFC 4733 payload (the redundant rest is ignored)."""
    if len(payload) < _EVENT.size:
        raise BadTelephoneEvent(f"a telephone event is 4 bytes, got {len(payload)}")
    event, flags, duration = _EVENT.unpack_from(payload)
    return TelephoneEvent(
        event=event, end=bool(flags & 0x80), volume=flags & 0x3F, duration=duration
    )


def telephone_event(digit: str, *, end: bool, duration: int, volume: int = 10) -> bytes:
    """An RFC 4733 payload for a DTMF `digit`."""
    index = DTMF_DIGITS.find(digit.upper()) if len(digit) == 1 else -1
    if index < 0:
        raise BadTelephoneEvent(f"{digit!r} is not a DTMF key")
    if not 0 <= volume < 64 or not 0 <= duration < SEQUENCE_MODULO:
        raise BadTelephoneEvent("volume is 0-63 and duration 16-bit")
    return TelephoneEvent(index, end, volume, duration).to_bytes()
