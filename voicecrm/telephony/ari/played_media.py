"""Audio the service hands Asterisk to play, at an address only it knows, while it plays.

ARI plays media by URI, and an `http(s)://` URI is fetched by Asterisk's HTTP
media cache (Asterisk 14+, `res_http_media_cache`). What the service
synthesises itself (a transfer's whisper) is offered here as a WAV file, 8 kHz
16-bit mono (Asterisk's `wav` format), under a random name (128 bits), for as
long as its playback needs it, and withdrawn then: nothing is written to disk,
and a name is worth nothing once withdrawn. The files live in this instance's
memory, so the address Asterisk is given (`VOICECRM_ARI_HTTP_URL`) must reach
this instance, as its RTP address (`VOICECRM_ARI_MEDIA_HOST`) already does.
"""

from __future__ import annotations

import secrets

from aiohttp import web

from voicecrm.api.problems import problem_response
from voicecrm.audio.resample import resample
from voicecrm.voice.ports import PcmAudio
from voicecrm.voice.wav import wav_bytes

PATH_PREFIX = "/ari/media/"
SAMPLE_RATE = 8000  # Asterisk's `wav`: 8 kHz, 16-bit, mono


class PlayedMedia:
    """The WAV files on offer to Asterisk, by name; `base_url` is where it reaches us."""

    def __init__(self, base_url: str | None) -> None:
        self.base_url = base_url.rstrip("/") if base_url else None
        self._files: dict[str, bytes] = {}

    def offer(self, audio: PcmAudio) -> str:
        """Offer `audio` as a WAV file; returns the URL Asterisk fetches it from."""
        if self.base_url is None:
            raise RuntimeError("VOICECRM_ARI_HTTP_URL is not set: Asterisk cannot fetch audio")
        pcm = resample(audio.pcm, audio.sample_rate, SAMPLE_RATE)
        name = secrets.token_urlsafe(16) + ".wav"
        self._files[name] = wav_bytes(PcmAudio(pcm, SAMPLE_RATE))
        return f"{self.base_url}{PATH_PREFIX}{name}"

    def withdraw(self, url: str) -> None:
        self._files.pop(url.rpartition("/")[2], None)

    def file(self, name: str) -> bytes | None:
        return self._files.get(name)

    def __len__(self) -> int:
        return len(self._files)


PLAYED_MEDIA = web.AppKey("played_media", PlayedMedia)


async def serve(request: web.Request) -> web.Response:
    """One file on offer, to Asterisk; 404 for a name not (or no longer) offered."""
    body = request.app[PLAYED_MEDIA].file(request.match_info["name"])
    if body is None:
        return problem_response(404, "Not Found", "no such media, or it is no longer offered")
    return web.Response(body=body, content_type="audio/wav")


def routes() -> list[web.RouteDef]:
    return [web.get(PATH_PREFIX + "{name}", serve)]
