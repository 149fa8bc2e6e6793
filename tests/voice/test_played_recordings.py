"""A recording a scenario plays, on a line whose carrier cannot fetch it (a Twilio Media
Stream): the voice call fetches it, decodes the WAV and sends it down the line."""

from __future__ import annotations

import io
import struct
import wave

import aiohttp
import pytest
from aiohttp import web
from pytest_aiohttp.plugin import AiohttpServer

from tests.speech_audio import InstantSpeech, ScriptedTranscriber, tone
from voicecrm.audio.codec import pcm16_to_ulaw, ulaw_to_pcm16
from voicecrm.calls.interface import CallInfo, Direction
from voicecrm.integrations.http_client import AiohttpClient
from voicecrm.telephony.simulator.audio_line import EmulatedLine, Silence
from voicecrm.voice.call import VoiceCall
from voicecrm.voice.line import CannotPlayUrls
from voicecrm.voice.ports import MediaUnavailable
from voicecrm.voice.recordings_played import decode_wav

INFO = CallInfo(
    call_id="p-1", direction=Direction.INBOUND, from_number="+15550100", to_number="+15550199"
)
HOLD = "https://media.example.com/hold.wav"


class StreamLine(EmulatedLine):
    """An emulated line that, like a Media Stream, cannot play a URL itself."""

    async def play(self, url: str) -> None:
        raise CannotPlayUrls(f"this line cannot play {url}")


class Files:
    def __init__(self, files: dict[str, bytes]) -> None:
        self.files = files
        self.fetched: list[str] = []

    async def fetch(self, url: str) -> bytes:
        self.fetched.append(url)
        if url not in self.files:
            raise MediaUnavailable(f"GET {url} answered 404")
        return self.files[url]


def wav(pcm: bytes, *, rate: int, channels: int = 1) -> bytes:
    body = io.BytesIO()
    with wave.open(body, "wb") as writer:
        writer.setnchannels(channels)
        writer.setsampwidth(2)
        writer.setframerate(rate)
        writer.writeframes(pcm)
    return body.getvalue()


def call_on(line: EmulatedLine, files: Files | None) -> VoiceCall:
    return VoiceCall(line, stt=ScriptedTranscriber([]), tts=InstantSpeech(), media=files)


async def test_a_recording_is_fetched_decoded_and_sent_down_the_line() -> None:
    line = StreamLine(INFO, [Silence(5.0)], tick=0.002)
    files = Files({HOLD: wav(tone(1.0, rate=16000), rate=16000)})
    async with call_on(line, files) as call:
        await call.play(HOLD)
    assert files.fetched == [HOLD]
    # One second of tone: 50 frames of 20 ms reached the caller, give or take the edges.
    assert 48 <= len(line.log.voiced_ticks) <= 51


async def test_a_stereo_file_plays_its_left_channel_at_its_own_rate() -> None:
    left = tone(0.5, rate=8000)
    silent = bytes(len(left))
    stereo = b"".join(left[i : i + 2] + silent[i : i + 2] for i in range(0, len(left), 2))
    audio = decode_wav(wav(stereo, rate=8000, channels=2), HOLD)
    assert (audio.pcm, audio.sample_rate) == (left, 8000)


async def test_what_cannot_be_played_is_refused_clearly() -> None:
    with pytest.raises(MediaUnavailable, match="not a WAV file"):
        decode_wav(b"ID3\x03 an mp3", HOLD)
    with pytest.raises(MediaUnavailable, match="8-bit samples in 1 channels"):
        body = io.BytesIO()
        with wave.open(body, "wb") as writer:
            writer.setnchannels(1)
            writer.setsampwidth(1)
            writer.setframerate(8000)
            writer.writeframes(bytes(800))
        decode_wav(body.getvalue(), HOLD)
    line = StreamLine(INFO, [Silence(1.0)], tick=0.002)
    async with call_on(line, Files({})) as call:
        with pytest.raises(MediaUnavailable, match="404"):
            await call.play(HOLD)
    line = StreamLine(INFO, [Silence(1.0)], tick=0.002)
    async with call_on(line, None) as call:  # nothing to fetch it with
        with pytest.raises(CannotPlayUrls):
            await call.play(HOLD)


def test_a_mu_law_wav_file_is_decoded() -> None:
    """Telephony prompts are often mu-law WAV, which Python's `wave` does not read."""
    pcm = tone(0.2, rate=8000)
    encoded = pcm16_to_ulaw(pcm)
    fmt = struct.pack("<HHIIHH", 7, 1, 8000, 8000, 1, 8)
    data = (
        b"RIFF"
        + struct.pack("<I", 4 + 8 + len(fmt) + 8 + len(encoded))
        + b"WAVE"
        + b"fmt "
        + struct.pack("<I", len(fmt))
        + fmt
        + b"data"
        + struct.pack("<I", len(encoded))
        + encoded
    )
    audio = decode_wav(data, HOLD)
    assert audio.sample_rate == 8000 and audio.pcm == ulaw_to_pcm16(encoded)


async def test_the_service_fetches_a_recording_over_http(aiohttp_server: AiohttpServer) -> None:
    async def hold(_: web.Request) -> web.Response:
        return web.Response(body=b"RIFF....WAVE")

    files = web.Application()
    files.router.add_get("/hold.wav", hold)
    server = await aiohttp_server(files)
    async with aiohttp.ClientSession() as session:
        client = AiohttpClient(session)
        assert await client.fetch(str(server.make_url("/hold.wav"))) == b"RIFF....WAVE"
        with pytest.raises(MediaUnavailable, match="answered 404"):
            await client.fetch(str(server.make_url("/gone.wav")))
        with pytest.raises(MediaUnavailable, match="not an http"):
            await client.fetch("file:///etc/passwd")
