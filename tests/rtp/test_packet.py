"""RTP (RFC 3550) and telephone-event (RFC 4733) packets: what the wire looks like."""

from __future__ import annotations

import struct

import pytest

from voicecrm.errors import VoiceCRMError
from voicecrm.telephony.rtp import packet as rtp
from voicecrm.telephony.rtp.packet import RtpPacket


def test_a_pcmu_packet_is_a_12_byte_header_and_its_payload() -> None:
    packet = RtpPacket(rtp.PCMU, sequence=7, timestamp=1600, ssrc=0xDEADBEEF, payload=b"\xff" * 160)
    wire = packet.to_bytes()
    assert len(wire) == 172
    assert wire[:12] == bytes.fromhex("80 00 0007 00000640 deadbeef")
    assert rtp.parse(wire) == packet


def test_marker_and_payload_type_share_the_second_byte() -> None:
    packet = RtpPacket(rtp.PCMA, sequence=1, timestamp=2, ssrc=3, payload=b"\xd5", marker=True)
    wire = packet.to_bytes()
    assert wire[1] == 0x88
    parsed = rtp.parse(wire)
    assert parsed.marker and parsed.payload_type == rtp.PCMA


def test_csrcs_extension_and_padding_round_trip_and_are_skipped() -> None:
    packet = RtpPacket(
        rtp.PCMU,
        sequence=65535,
        timestamp=2**32 - 1,
        ssrc=1,
        payload=b"audio",
        csrcs=(10, 20, 30),
        extension=(0xBEDE, b"\x10\xaa\x00\x00"),
    )
    wire = packet.to_bytes(padding=3)
    assert wire[0] == 0x80 | 0x20 | 0x10 | 3
    assert len(wire) == 12 + 12 + 4 + 4 + 5 + 3
    assert rtp.parse(wire) == packet


def test_a_foreign_extension_is_skipped_to_reach_the_payload() -> None:
    # Built by hand, as another stack would: a two-word extension before the payload.
    header = struct.pack("!BBHII", 0x90, 0, 5, 800, 9)
    extension = struct.pack("!HH", 0x1000, 2) + b"12345678"
    parsed = rtp.parse(header + extension + b"\x7f" * 160)
    assert parsed.payload == b"\x7f" * 160
    assert parsed.extension == (0x1000, b"12345678")


def test_sequence_and_timestamp_arithmetic_wraps() -> None:
    assert rtp.sequence_add(65535, 1) == 0
    assert rtp.timestamp_add(2**32 - 80, 160) == 80
    assert rtp.sequence_delta(0, 65535) == 1
    assert rtp.sequence_delta(65535, 0) == -1
    assert rtp.sequence_delta(10, 10) == 0
    assert rtp.sequence_delta(3, 65530) == 9


@pytest.mark.parametrize(
    ("data", "error"),
    [
        (b"", rtp.TruncatedPacket),
        (b"\x80\x00\x00\x01\x00\x00", rtp.TruncatedPacket),
        (bytes.fromhex("40000001000000a000000001") + b"x", rtp.UnsupportedVersion),
        (bytes.fromhex("00000001000000a000000001"), rtp.UnsupportedVersion),
        # CSRC count 4, but no room for them
        (bytes.fromhex("84000001000000a000000001") + b"\0" * 8, rtp.TruncatedPacket),
        # extension bit, but no extension header
        (bytes.fromhex("90000001000000a000000001"), rtp.TruncatedPacket),
        # extension says 5 words, has 1
        (bytes.fromhex("90000001000000a000000001") + b"\x00\x00\x00\x05abcd", rtp.TruncatedPacket),
        # padding bit with a zero length
        (bytes.fromhex("a0000001000000a000000001") + b"ab\x00", rtp.BadPadding),
        # padding longer than the packet's payload
        (bytes.fromhex("a0000001000000a000000001") + b"ab\x09", rtp.BadPadding),
    ],
)
def test_malformed_packets_are_refused_with_typed_errors(
    data: bytes, error: type[rtp.RtpError]
) -> None:
    with pytest.raises(error) as raised:
        rtp.parse(data)
    assert isinstance(raised.value, VoiceCRMError) and raised.value.detail


def test_packets_out_of_range_cannot_be_built() -> None:
    with pytest.raises(rtp.RtpError):
        RtpPacket(128, sequence=0, timestamp=0, ssrc=0)
    with pytest.raises(rtp.RtpError):
        RtpPacket(0, sequence=65536, timestamp=0, ssrc=0)
    with pytest.raises(rtp.RtpError):
        RtpPacket(0, sequence=0, timestamp=2**32, ssrc=0)
    with pytest.raises(rtp.RtpError):
        RtpPacket(0, sequence=0, timestamp=0, ssrc=0, extension=(1, b"abc"))
    with pytest.raises(rtp.RtpError):
        RtpPacket(0, sequence=0, timestamp=0, ssrc=0).to_bytes(padding=256)


def test_telephone_events_carry_the_key_the_end_bit_and_the_duration() -> None:
    payload = rtp.telephone_event("#", end=True, duration=800, volume=10)
    assert payload == bytes([11, 0x80 | 10]) + (800).to_bytes(2, "big")
    event = rtp.parse_telephone_event(payload)
    assert (event.digit, event.end, event.volume, event.duration) == ("#", True, 10, 800)
    assert rtp.parse_telephone_event(rtp.telephone_event("7", end=False, duration=0)).digit == "7"
    assert rtp.parse_telephone_event(bytes([16, 0, 0, 0])).digit is None  # a tone, not a key
    with pytest.raises(rtp.BadTelephoneEvent):
        rtp.parse_telephone_event(b"\x05\x80")
    with pytest.raises(rtp.BadTelephoneEvent):
        rtp.telephone_event("X", end=True, duration=0)
