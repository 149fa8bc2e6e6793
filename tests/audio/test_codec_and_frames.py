"""G.711, resampling and framing: the arithmetic every carrier frame goes through."""

from __future__ import annotations

import numpy as np

from tests.speech_audio import tone
from voicecrm.audio.codec import (
    Encoding,
    alaw_to_pcm16,
    pcm16_to_alaw,
    pcm16_to_ulaw,
    silence,
    ulaw_to_pcm16,
)
from voicecrm.audio.frames import PCM_FRAME_BYTES, ULAW_FRAME_BYTES, Framer
from voicecrm.audio.resample import StreamResampler, resample


def test_mu_law_round_trip_keeps_speech_within_the_codecs_quantisation() -> None:
    pcm = tone(0.1, rate=8000, level=12000)
    back = np.frombuffer(ulaw_to_pcm16(pcm16_to_ulaw(pcm)), dtype="<i2").astype(float)
    original = np.frombuffer(pcm, dtype="<i2").astype(float)
    assert len(pcm16_to_ulaw(pcm)) == len(pcm) // 2  # one byte a sample
    snr = 10 * np.log10((original**2).sum() / ((original - back) ** 2).sum())
    assert snr > 30  # G.711 gives about 38 dB on a loud tone


def test_a_law_round_trip() -> None:
    pcm = tone(0.1, rate=8000, level=12000)
    back = np.frombuffer(alaw_to_pcm16(pcm16_to_alaw(pcm)), dtype="<i2").astype(int)
    assert np.abs(back - np.frombuffer(pcm, dtype="<i2")).max() < 400


def test_silence_decodes_to_zero_in_both_laws() -> None:
    assert set(ulaw_to_pcm16(silence(Encoding.ULAW, 160))) == {0}
    assert set(alaw_to_pcm16(silence(Encoding.ALAW, 160))) <= {0, 8, 255}  # A-law has no 0


def test_framer_cuts_any_chunking_into_exact_frames_and_pads_the_tail() -> None:
    data = bytes(range(256)) * 3  # 768 bytes: 4 frames and 128 left over
    framer = Framer(ULAW_FRAME_BYTES)
    frames: list[bytes] = []
    offset = 0
    for size in (1, 7, 300, 13, 447):
        frames += framer.push(data[offset : offset + size])
        offset += size
    assert [len(f) for f in frames] == [160] * 4
    assert b"".join(frames) == data[:640]
    tail = framer.flush(0xFF)
    assert tail == data[640:] + b"\xff" * 32
    assert framer.flush(0xFF) is None


def test_stream_resampler_matches_whole_clip_resampling_in_length() -> None:
    pcm = tone(1.0, rate=24000)
    stream = StreamResampler(24000, 8000)
    pieces = [stream.process(pcm[i : i + 999 * 2]) for i in range(0, len(pcm), 999 * 2)]
    out = b"".join(pieces) + stream.flush()
    assert len(out) // 2 == 8000
    assert abs(len(resample(pcm, 24000, 8000)) // 2 - 8000) <= 1
    assert StreamResampler(8000, 8000).process(b"\x01\x00") == b"\x01\x00"


def test_a_pcm_frame_is_twice_a_mu_law_frame() -> None:
    assert PCM_FRAME_BYTES == 2 * ULAW_FRAME_BYTES == 320
