"""Asterisk at load: inbound ARI calls with external media, held at real time.

One `voicecrm serve` process, pinned to CPU 0, runs its Stasis application
against a small fake Asterisk that this process, pinned to CPU 1, plays: it
serves the ARI REST calls the service makes (answer, externalMedia, bridges,
hang-ups) and the events WebSocket, injects a StasisStart for each caller
(starts spread over about two seconds), and for each ExternalMedia channel
runs an RTP peer that sends the caller's 20 ms PCMU frames at real time (a
second of silence, then a sentence rendered by espeak-ng every five seconds)
and records the service's RTP. When the caller's script ends, the caller
hangs up (StasisEnd, ChannelDestroyed). Speech goes through the same instant
OpenAI-compatible fake as `bench.twilio_streams`, and the scenario is the same
listen/answer loop.

It prints, per number of concurrent calls: calls failed, StasisStart-to-answer
latency (from sending StasisStart to receiving POST /channels/{id}/answer),
answers heard, RTP packets each way, the jitter of the service's answer
packets, lost audio (answer frames that never came, gaps in the service's
sequence numbers), and the service's CPU.

    .venv/bin/python -m bench.ari_calls            # about 3 minutes
    .venv/bin/python -m bench.ari_calls --quick    # about 40 s
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import os
import random
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

from aiohttp import WSCloseCode, web

from bench.phones import e164
from bench.seed import seed
from bench.twilio_streams import (
    ANSWER_SECONDS,
    DIALLED,
    FRAME,
    SILENT,
    Service,
    answers_in,
    caller_speech,
    fake_speech_app,
    free_port,
    percentile,
    pin,
)
from bench.twilio_streams import start_service as start_twilio_bench_service
from voicecrm.audio.codec import rms, ulaw_to_pcm16
from voicecrm.telephony.rtp import packet as rtp

USER = "voicecrm"
PASSWORD = "bench-ari-secret"
APP = "voicecrm"
ASTERISK_ID = "02:42:ac:11:00:02"
VOICED_RMS = 500  # the answer's tone is ~4,000; the line's comfort noise (-60 dBFS) ~30
LEAD_FRAMES = 3  # RtpMediaLine's pacing lead: the first frames of an answer go at once


def timestamp() -> str:
    now = datetime.now(UTC)
    return now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}+0000"


# ----------------------------------------------------------------- Asterisk's media
class RtpPeer(asyncio.DatagramProtocol):
    """Asterisk's end of one ExternalMedia channel: sends the caller, records the service."""

    def __init__(self, remote: tuple[str, int], script: list[bytes]) -> None:
        self.remote = remote
        self.script = script
        self.sent = 0
        self.start_tick = 0
        self.arrivals: list[tuple[float, bool]] = []  # (when, voiced)
        self.seq_gaps = 0
        self.skipped = 0  # 20 ms slots the service's RTP timestamps jumped over (not sent)
        self.last_seq: int | None = None
        self.last_ts = 0
        self.done = asyncio.Event()
        self.transport: asyncio.DatagramTransport | None = None
        self._sequence = 4000
        self._timestamp = 160_000
        self._loop = asyncio.get_running_loop()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[Any, ...]) -> None:
        now = self._loop.time()
        try:
            packet = rtp.parse(data)
        except rtp.RtpError:
            return
        if self.last_seq is not None:
            delta = rtp.sequence_delta(packet.sequence, self.last_seq)
            if delta > 1:
                self.seq_gaps += delta - 1
            if delta <= 0:
                return  # duplicate or late
            jump = rtp.timestamp_add(packet.timestamp, -self.last_ts) // len(packet.payload)
            self.skipped += max(0, jump - delta)
        self.last_seq, self.last_ts = packet.sequence, packet.timestamp
        self.arrivals.append((now, rms(ulaw_to_pcm16(packet.payload)) > VOICED_RMS))

    def send_next(self) -> None:
        if self.transport is None or self.done.is_set():
            return
        payload = self.script[self.sent]
        packet = rtp.RtpPacket(rtp.PCMU, self._sequence, self._timestamp, 0xA57E, payload)
        self.transport.sendto(packet.to_bytes(), self.remote)
        self._sequence = rtp.sequence_add(self._sequence, 1)
        self._timestamp = rtp.timestamp_add(self._timestamp, len(payload))
        self.sent += 1
        if self.sent >= len(self.script):
            self.done.set()

    def close(self) -> None:
        self.done.set()
        if self.transport is not None:
            self.transport.close()
            self.transport = None


@dataclass
class Call:
    channel: dict[str, Any]
    stasis_at: float = 0.0
    answered_at: float | None = None
    peer: RtpPeer | None = None
    bridged: asyncio.Event = field(default_factory=asyncio.Event)
    failed: str | None = None


@dataclass
class FakeAsterisk:
    """ARI REST and events for the calls this bench places; one clock sends every peer."""

    script: list[bytes]
    calls: dict[str, Call] = field(default_factory=dict)  # by the caller's channel id
    peers: dict[str, RtpPeer] = field(default_factory=dict)  # by media channel id
    sockets: list[web.WebSocketResponse] = field(default_factory=list)
    connected: asyncio.Event = field(default_factory=asyncio.Event)
    errors: list[str] = field(default_factory=list)
    ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    now_tick: int = 0

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/ari/events", self._events)
        app.router.add_post("/ari/channels/externalMedia", self._external_media)
        app.router.add_post("/ari/channels/{id}/answer", self._answer)
        app.router.add_get("/ari/channels/{id}", self._get_channel)
        app.router.add_delete("/ari/channels/{id}", self._hangup)
        app.router.add_post("/ari/bridges", self._create_bridge)
        app.router.add_post("/ari/bridges/{id}/addChannel", self._add_channel)
        app.router.add_delete("/ari/bridges/{id}", self._ok)
        app.on_shutdown.append(self._close_sockets)
        return app

    def channel(self, channel_id: str, name: str, state: str, caller: str = "") -> dict[str, Any]:
        return {
            "id": channel_id,
            "name": name,
            "state": state,
            "protocol_id": "",
            "caller": {"name": "", "number": caller},
            "connected": {"name": "", "number": ""},
            "accountcode": "",
            "dialplan": {
                "context": "from-trunk",
                "exten": DIALLED,
                "priority": 1,
                "app_name": "Stasis",
                "app_data": APP,
            },
            "creationtime": timestamp(),
            "language": "en",
        }

    async def emit(self, event: dict[str, Any]) -> None:
        message = {
            **event,
            "application": APP,
            "timestamp": timestamp(),
            "asterisk_id": ASTERISK_ID,
        }
        for ws in list(self.sockets):
            if not ws.closed:
                await ws.send_json(message)

    async def tick(self) -> None:
        """Every peer's next frame on one absolute 20 ms schedule, catching up if late."""
        loop = asyncio.get_running_loop()
        start = loop.time()
        for tick in itertools.count():
            delay = start + tick * FRAME - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            self.now_tick = tick
            for peer in list(self.peers.values()):
                while peer.sent < tick - peer.start_tick + 1 and not peer.done.is_set():
                    peer.send_next()

    async def place(self, channel_id: str, caller: str, delay: float, seconds: float) -> Call:
        """One caller: StasisStart, the media for `seconds` once it exists, then a hang-up."""
        await asyncio.sleep(delay)
        loop = asyncio.get_running_loop()
        call = Call(self.channel(channel_id, f"PJSIP/trunk-{channel_id}", "Ring", caller))
        self.calls[channel_id] = call
        call.stasis_at = loop.time()
        await self.emit({"type": "StasisStart", "args": ["inbound"], "channel": call.channel})
        try:
            async with asyncio.timeout(seconds + 20):
                await call.bridged.wait()
                assert call.peer is not None
                await call.peer.done.wait()
        except TimeoutError:
            call.failed = "no answer" if call.answered_at is None else "no media bridged"
        await self.emit({"type": "ChannelHangupRequest", "cause": 16, "channel": call.channel})
        await self.emit({"type": "StasisEnd", "channel": call.channel})
        await self.emit(
            {
                "type": "ChannelDestroyed",
                "cause": 16,
                "cause_txt": "Normal Clearing",
                "channel": call.channel,
            }
        )
        if call.peer is not None:
            call.peer.close()
        return call

    # --- REST ---------------------------------------------------------------------------
    async def _events(self, request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        self.sockets.append(ws)
        self.connected.set()
        async for _ in ws:
            pass
        self.sockets.remove(ws)
        return ws

    async def _close_sockets(self, app: web.Application) -> None:
        for ws in list(self.sockets):
            await ws.close(code=WSCloseCode.GOING_AWAY)

    async def _answer(self, request: web.Request) -> web.Response:
        call = self.calls.get(request.match_info["id"])
        if call is None:
            return web.json_response({"message": "Channel not found"}, status=404)
        if call.answered_at is None:
            call.answered_at = asyncio.get_running_loop().time()
        call.channel["state"] = "Up"
        return web.Response(status=204)

    async def _get_channel(self, request: web.Request) -> web.Response:
        call = self.calls.get(request.match_info["id"])
        if call is None:
            return web.json_response({"message": "Channel not found"}, status=404)
        return web.json_response(call.channel)

    async def _external_media(self, request: web.Request) -> web.Response:
        host, _, port = request.query["external_host"].rpartition(":")
        media_id = request.query.get("channelId") or f"media-{next(self.ids)}"
        loop = asyncio.get_running_loop()
        peer = RtpPeer((host, int(port)), self.script)
        peer.start_tick = self.now_tick + 1
        await loop.create_datagram_endpoint(lambda: peer, local_addr=("127.0.0.1", 0))
        assert peer.transport is not None
        address, local_port = peer.transport.get_extra_info("sockname")[:2]
        self.peers[media_id] = peer
        channel = self.channel(media_id, f"UnicastRTP/{host}:{port}", "Up")
        channel["channelvars"] = {
            "UNICASTRTP_LOCAL_ADDRESS": str(address),
            "UNICASTRTP_LOCAL_PORT": str(local_port),
        }
        answer = web.json_response(channel)
        await self.emit({"type": "StasisStart", "args": [], "channel": channel})
        return answer

    async def _create_bridge(self, request: web.Request) -> web.Response:
        bridge_id = request.query.get("bridgeId") or f"bridge-{next(self.ids)}"
        return web.json_response(
            {"id": bridge_id, "technology": "simple_bridge", "bridge_type": "mixing"}
        )

    async def _add_channel(self, request: web.Request) -> web.Response:
        ids = request.query.get("channel", "").split(",")
        callers = [self.calls[i] for i in ids if i in self.calls]
        media = [self.peers[i] for i in ids if i in self.peers]
        if len(callers) != 1 or len(media) != 1:
            self.errors.append(f"addChannel with {ids}")
            return web.json_response({"message": "Channel not found"}, status=400)
        callers[0].peer = media[0]
        callers[0].bridged.set()
        return web.Response(status=204)

    async def _hangup(self, request: web.Request) -> web.Response:
        peer = self.peers.pop(request.match_info["id"], None)
        if peer is not None:
            peer.close()
        return web.Response(status=204)

    async def _ok(self, request: web.Request) -> web.Response:
        return web.Response(status=204)


# ----------------------------------------------------------------- the service
async def start_service(folder: Path, database_url: str, speech_url: str, ari_url: str) -> Service:
    """Twilio's bench's service, told to take its calls from this fake Asterisk."""
    return await start_twilio_bench_service(
        folder,
        database_url,
        speech_url,
        extra_env={
            "VOICECRM_ARI_URL": ari_url,
            "VOICECRM_ARI_USER": USER,
            "VOICECRM_ARI_PASSWORD": PASSWORD,
            "VOICECRM_ARI_APP": APP,
            "VOICECRM_ARI_MEDIA_HOST": "127.0.0.1",
        },
        echo=True,
    )


async def stop_service(service: Service) -> None:
    service.process.terminate()
    await service.process.wait()
    await service.drain


# ----------------------------------------------------------------- the runs
@dataclass
class Heard:
    answers: int = 0
    frames_out: int = 0
    gaps_ms: list[float] = field(default_factory=list)
    missing: int = 0


def listen(peer: RtpPeer) -> Heard:
    """Answers = runs of voiced packets less than 200 ms apart; jitter after the lead."""
    heard = Heard(frames_out=len(peer.arrivals))
    voiced = [at for at, is_voice in peer.arrivals if is_voice]
    heard.answers, heard.missing, heard.gaps_ms = answers_in(voiced, LEAD_FRAMES)
    return heard


def script_for(seconds: float, speech: list[bytes]) -> list[bytes]:
    """A second of silence, then the sentence every five seconds, cut at `seconds`."""
    turn = round(5.0 / FRAME)
    script = [SILENT] * 50
    while len(script) < seconds / FRAME:
        script += speech + [SILENT] * max(0, turn - len(speech))
    return script[: round(seconds / FRAME)]


async def calls_at(
    service: Service, fake: FakeAsterisk, count: int, seconds: float, numbers: Sequence[int]
) -> dict[str, Any]:
    rng = random.Random(count)
    fake.calls.clear()
    cpu_before, wall_before = service.cpu_seconds(), time.perf_counter()
    calls = await asyncio.gather(
        *(
            fake.place(
                f"1700{count:04d}.{i}", e164(rng.choice(numbers)), rng.uniform(0, 2.0), seconds
            )
            for i in range(count)
        )
    )
    cpu = service.cpu_seconds() - cpu_before
    wall = time.perf_counter() - wall_before
    await asyncio.sleep(1.0)  # let the service tidy up (media hang-ups, bridges)
    ok = [c for c in calls if c.failed is None and c.peer is not None]
    heard = [listen(c.peer) for c in ok if c.peer is not None]
    for call, hearing in zip(ok, heard, strict=True):
        if hearing.frames_out == 0:
            call.failed = "no RTP from the service"
    failed = [c for c in calls if c.failed is not None]
    latencies = [c.answered_at - c.stasis_at for c in calls if c.answered_at is not None]
    gaps = [g for h in heard for g in h.gaps_ms]
    return {
        "calls": count,
        "failed": len(failed),
        "answer_p50": percentile(latencies, 50) * 1000,
        "answer_p99": percentile(latencies, 99) * 1000,
        "answers": sum(h.answers for h in heard),
        "rtp_in": sum(c.peer.sent for c in ok if c.peer is not None),
        "rtp_out": sum(h.frames_out for h in heard),
        "jitter_p50": percentile(gaps, 50),
        "jitter_p99": percentile(gaps, 99),
        "jitter_max": max(gaps, default=float("nan")),
        "missing": sum(h.missing for h in heard),
        "seq_gaps": sum(c.peer.seq_gaps for c in ok if c.peer is not None),
        "skipped": sum(c.peer.skipped for c in ok if c.peer is not None),
        "cpu_share": cpu / wall,
        "cpu_ms_per_call_s": 1000 * cpu / (count * seconds),
        "rss_mib": service.rss_mib(),
        "why": sorted({c.failed for c in failed if c.failed} | set(fake.errors)),
    }


async def run(args: argparse.Namespace) -> int:
    pin(1)  # Asterisk's side; the service gets CPU 0
    levels = [5, 20] if args.quick else args.calls
    seconds = 8.0 if args.quick else args.seconds
    contacts = 2_000 if args.quick else args.contacts
    speech = caller_speech()
    fake = FakeAsterisk(script_for(seconds, speech))
    with tempfile.TemporaryDirectory(prefix="voicecrm-bench-ari-") as tmp:
        folder = Path(tmp)
        database_url = f"sqlite+aiosqlite:///{folder / 'bench.db'}"
        print(f"[seeding {contacts:,} contacts]", file=sys.stderr, flush=True)
        seeded = await seed(
            database_url, contacts=contacts, hot_events=0, spare=0, rng=random.Random(7)
        )
        runners: list[web.AppRunner] = []
        ports = []
        for app in (fake_speech_app(), fake.app()):
            runner = web.AppRunner(app)
            await runner.setup()
            port = free_port()
            await web.TCPSite(runner, "127.0.0.1", port).start()
            runners.append(runner)
            ports.append(port)
        ticker = asyncio.create_task(fake.tick())
        service = await start_service(
            folder,
            database_url,
            f"http://127.0.0.1:{ports[0]}/v1",
            f"http://127.0.0.1:{ports[1]}",
        )
        held: list[dict[str, Any]] = []
        try:
            async with asyncio.timeout(30):
                await fake.connected.wait()
            print(
                f"date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; "
                f"{os.cpu_count()} cpus; service pinned to cpu 0, Asterisk's side to cpu 1; "
                f"{seeded.contacts:,} contacts"
            )
            print(
                f"\ninbound ARI calls with ExternalMedia RTP, held {seconds:g} s each at real "
                f"time (a turn every 5 s: the caller's sentence, the service's "
                f"{ANSWER_SECONDS:g} s answer)"
            )
            print(
                "calls failed  answer p50 ms  p99 ms  answers  RTP in  RTP out"
                "  jitter p50 ms  p99 ms  max ms  missing  seq gaps  skipped  server CPU"
                "  CPU ms/call-s  RSS MiB"
            )
            for count in levels:
                print(f"[{count} calls]", file=sys.stderr, flush=True)
                row = await calls_at(service, fake, count, seconds, seeded.numbers)
                held.append(row)
                print(
                    f"{row['calls']:>5} {row['failed']:>6} {row['answer_p50']:>13.2f} "
                    f"{row['answer_p99']:>7.2f} {row['answers']:>8} {row['rtp_in']:>7,} "
                    f"{row['rtp_out']:>8,} {row['jitter_p50']:>14.2f} {row['jitter_p99']:>7.2f} "
                    f"{row['jitter_max']:>7.1f} {row['missing']:>8} {row['seq_gaps']:>9} "
                    f"{row['skipped']:>8} "
                    f"{row['cpu_share']:>11.0%} {row['cpu_ms_per_call_s']:>14.2f} "
                    f"{row['rss_mib']:>8.0f}"
                    + (f"  ({'; '.join(row['why'])})" if row["why"] else ""),
                    flush=True,
                )
        finally:
            await stop_service(service)
            ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await ticker
            for runner in reversed(runners):
                await runner.cleanup()
    clean = [
        r["calls"]
        for r in held
        if not r["failed"] and not r["missing"] and not r["seq_gaps"] and r["jitter_p99"] < 60
    ]
    print(
        f"\nconcurrent ARI calls with external media held at real time by one process: "
        f"held cleanly (no failures, no lost audio, p99 jitter < 60 ms) up to "
        f"{max(clean, default=0)} of {levels} (no numeric target for ARI)"
    )
    print(
        "slots the service skipped (its loop stalled > 40 ms; RTP timestamps jump, no "
        "packet sent): " + ", ".join(f"{r['skipped']:,} at {r['calls']} calls" for r in held)
    )
    print(
        "StasisStart-to-answer latency p50/p99: "
        + ", ".join(
            f"{r['answer_p50']:.1f}/{r['answer_p99']:.1f} ms at {r['calls']} calls" for r in held
        )
    )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.ari_calls",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--quick", action="store_true", help="5 and 20 calls of 8 s")
    parser.add_argument("--calls", type=int, nargs="+", default=[50, 100, 150])
    parser.add_argument("--seconds", type=float, default=30.0, help="how long each call lasts")
    parser.add_argument("--contacts", type=int, default=10_000)
    return asyncio.run(run(parser.parse_args(argv)))


if __name__ == "__main__":
    raise SystemExit(main())
