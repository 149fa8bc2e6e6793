"""Twilio at load: Media Streams held at real time, and the incoming-call webhook, at scale.

One `voicecrm serve` process, pinned to CPU 0, answers signed voice webhooks
and holds bidirectional Media Streams; this process, pinned to CPU 1, plays
Twilio: it places the calls, streams each caller's audio in 20 ms frames at
real time (real speech rendered by espeak-ng, with pauses between turns),
queues the service's audio and plays it back one frame per tick as Twilio
does (echoing marks, obeying clear), and serves the speech endpoints the
service calls (an instant OpenAI-compatible fake: a transcript at once, a
second of speech streamed at once). Every stream runs the real pipeline in
the service: VAD, end of utterance, transcription request, the scenario,
synthesis request, resampling, pacing.

It prints, per number of concurrent streams: frames in and out, the jitter of
the service's outgoing frames, lost audio (Twilio's playout buffer running dry
in the middle of an answer, and answer frames that never came), and the
service's CPU per stream; then the webhook's latency with the database
holding `--contacts` contacts (1,000,000 by default).

    .venv/bin/python -m bench.twilio_streams            # about 8 minutes
    .venv/bin/python -m bench.twilio_streams --quick    # about 1 minute
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import io
import json
import math
import os
import random
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import wave
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from twilio.request_validator import RequestValidator

from bench.phones import e164
from bench.seed import seed
from voicecrm.audio.codec import Encoding, pcm16_to_ulaw, silence
from voicecrm.audio.frames import ULAW_FRAME_BYTES
from voicecrm.audio.resample import resample

TOKEN = "bench-twilio-auth-token"
SIGNER = RequestValidator(TOKEN)
DIALLED = "+14155550100"
FRAME = 0.02
SILENT = silence(Encoding.ULAW, ULAW_FRAME_BYTES)
ANSWER_SECONDS = 1.0  # what the fake voice says each turn
LEAD_FRAMES = 5  # the service's pacing lead (TwilioMediaLine's default)

SCENARIO = """\
name: bench-listen-answer
default: true
numbers: ["+14155550100"]
settings: {limits: {max_steps: 100000}}
steps:
  listen:
    gather: {input: [speech], timeout: 20, save_as: said}
  answer:
    say: "You said {{ vars.said }}."
  again:
    goto: listen
"""


def pin(cpu: int) -> None:
    with contextlib.suppress(AttributeError, OSError):
        os.sched_setaffinity(0, {cpu})


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def percentile(values: Sequence[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


def caller_speech() -> list[bytes]:
    """A caller's sentence as 20 ms mu-law frames, rendered once by espeak-ng."""
    espeak = shutil.which("espeak-ng")
    if espeak is None:
        raise SystemExit("bench.twilio_streams needs espeak-ng (apt-get install espeak-ng)")
    wav = subprocess.run(
        [espeak, "-v", "en-us", "-s", "160", "--stdout", "I would like to book an appointment"],
        check=True,
        capture_output=True,
    ).stdout
    with wave.open(io.BytesIO(wav)) as reader:
        pcm = resample(reader.readframes(reader.getnframes()), reader.getframerate(), 8000)
    ulaw = pcm16_to_ulaw(pcm)
    ulaw += SILENT[: -len(ulaw) % ULAW_FRAME_BYTES]
    return [ulaw[i : i + ULAW_FRAME_BYTES] for i in range(0, len(ulaw), ULAW_FRAME_BYTES)]


# ----------------------------------------------------------------- the speech provider fake
def fake_speech_app() -> web.Application:
    """Transcribes at once; speaks a second of 24 kHz PCM, streamed in 100 ms chunks."""
    t = [int(6000 * math.sin(2 * math.pi * 440 * i / 24000)) for i in range(2400)]
    chunk = b"".join(v.to_bytes(2, "little", signed=True) for v in t)  # 100 ms

    async def transcriptions(request: web.Request) -> web.Response:
        await request.post()
        return web.json_response({"text": "I would like to book an appointment"})

    async def speech(request: web.Request) -> web.StreamResponse:
        await request.json()
        response = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
        await response.prepare(request)
        for _ in range(round(ANSWER_SECONDS * 10)):
            await response.write(chunk)
        await response.write_eof()
        return response

    app = web.Application()
    app.router.add_post("/v1/audio/transcriptions", transcriptions)
    app.router.add_post("/v1/audio/speech", speech)
    return app


# ----------------------------------------------------------------- the service
@dataclass
class Service:
    process: asyncio.subprocess.Process
    base: str
    drain: asyncio.Task[None]

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def rss_mib(self) -> float:
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        return float("nan")


async def start_service(
    folder: Path,
    database_url: str,
    speech_url: str,
    *,
    extra_env: Mapping[str, str] | None = None,
    echo: bool = False,
) -> Service:
    """`voicecrm serve` pinned to CPU 0; `echo` shows its log lines on stderr."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    scenarios = folder / "scenarios"
    scenarios.mkdir(exist_ok=True)
    (scenarios / "bench.yaml").write_text(SCENARIO)
    env = {
        **os.environ,
        "VOICECRM_DATABASE_URL": database_url,
        "VOICECRM_SCENARIOS_DIR": str(scenarios),
        "VOICECRM_PUBLIC_URL": base,
        "VOICECRM_TWILIO_AUTH_TOKEN": TOKEN,
        "VOICECRM_LLM_BASE_URL": speech_url,
        "VOICECRM_STT_PROVIDER": "openai",
        "VOICECRM_TTS_PROVIDER": "openai",
        "VOICECRM_LOG_LEVEL": "WARNING",
        **(extra_env or {}),
    }
    command = [sys.executable, "-m", "voicecrm", "serve", "--port", str(port)]
    if shutil.which("taskset"):
        command = ["taskset", "-c", "0", *command]
    process = await asyncio.create_subprocess_exec(
        *command, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    assert process.stdout is not None
    async with asyncio.timeout(120):
        while b"ready at" not in (line := await process.stdout.readline()):
            if not line:
                raise SystemExit("the service did not start")

    async def drain() -> None:  # keep its pipe from filling up
        assert process.stdout is not None
        while line := await process.stdout.readline():
            if echo:
                sys.stderr.write("  service: " + line.decode(errors="replace"))

    return Service(process, base, asyncio.create_task(drain()))


async def stop_service(service: Service) -> None:
    service.process.terminate()
    await service.process.wait()
    await service.drain


# ----------------------------------------------------------------- Twilio's side
def signed(url: str, fields: dict[str, str]) -> dict[str, str]:
    return {"X-Twilio-Signature": SIGNER.compute_signature(url, fields)}


def call_fields(sid: str, caller: str) -> dict[str, str]:
    return {
        "CallSid": sid,
        "AccountSid": "AC" + "0" * 32,
        "From": caller,
        "To": DIALLED,
        "CallStatus": "ringing",
        "Direction": "inbound",
    }


@dataclass
class StreamResult:
    frames_in: int = 0  # caller frames sent to the service
    frames_out: int = 0  # service frames received
    answers: int = 0
    gaps_ms: list[float] = field(default_factory=list)  # deviation of inter-arrival from 20 ms
    underruns: int = 0  # ticks the playout buffer ran dry inside an answer
    missing: int = 0  # answer frames that never came
    failed: str | None = None


async def hold_stream(
    session: aiohttp.ClientSession,
    base: str,
    sid: str,
    caller: str,
    speech: list[bytes],
    seconds: float,
    start_delay: float,
) -> StreamResult:
    """One call as Twilio holds it: webhook, stream, caller audio, playout at real time."""
    result = StreamResult()
    await asyncio.sleep(start_delay)  # stagger: real calls do not start in lockstep
    fields = call_fields(sid, caller)
    async with session.post(
        f"{base}/twilio/voice", data=fields, headers=signed(f"{base}/twilio/voice", fields)
    ) as response:
        twiml = await response.text()
    found = re.search(r'name="call_id" value="(\d+)"', twiml)
    if found is None:
        result.failed = f"webhook answered {response.status}"
        return result
    ws_url = "ws" + base.removeprefix("http") + "/twilio/media"
    stream_sid = "MZ" + sid[2:]
    async with session.ws_connect(ws_url, headers=signed(ws_url, {})) as ws:
        queue: deque[tuple[str, Any]] = deque()
        arrivals: list[float] = []
        loop = asyncio.get_running_loop()

        async def send(message: dict[str, Any]) -> None:
            await ws.send_str(json.dumps(message))

        async def reader() -> None:
            async for message in ws:
                if message.type is not aiohttp.WSMsgType.TEXT:
                    break
                data = json.loads(message.data)
                if data["event"] == "media":
                    arrivals.append(loop.time())
                    queue.append(("media", data["media"]["payload"]))
                elif data["event"] == "mark":
                    queue.append(("mark", data["mark"]["name"]))
                elif data["event"] == "clear":
                    names = [item for kind, item in queue if kind == "mark"]
                    queue.clear()
                    for name in names:
                        await send(
                            {"event": "mark", "streamSid": stream_sid, "mark": {"name": name}}
                        )

        await send({"event": "connected", "protocol": "Call", "version": "1.0.0"})
        await send(
            {
                "event": "start",
                "streamSid": stream_sid,
                "start": {
                    "streamSid": stream_sid,
                    "accountSid": "AC" + "0" * 32,
                    "callSid": sid,
                    "tracks": ["inbound"],
                    "customParameters": {"call_id": found.group(1)},
                    "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
                },
            }
        )
        reading = asyncio.create_task(reader())
        # The caller: a second of silence, then the sentence every five seconds.
        turn = round(5.0 / FRAME)
        script = [SILENT] * 50
        while len(script) < seconds / FRAME:
            script += speech + [SILENT] * max(0, turn - len(speech))
        script = script[: round(seconds / FRAME)]
        start = loop.time()
        playing = False
        for tick, frame in enumerate(script):
            delay = start + tick * FRAME - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            if reading.done():
                result.failed = "the service closed the stream"
                break
            played = False
            while queue:
                kind, item = queue[0]
                if kind == "mark":
                    queue.popleft()
                    await send({"event": "mark", "streamSid": stream_sid, "mark": {"name": item}})
                    continue
                if played:
                    break
                queue.popleft()
                played = True
            if playing and not played and any(kind == "media" for kind, _ in queue):
                result.underruns += 1  # more of the answer came, but too late to play in turn
            playing = played
            await send(
                {
                    "event": "media",
                    "streamSid": stream_sid,
                    "media": {
                        "track": "inbound",
                        "chunk": str(tick + 1),
                        "timestamp": str(tick * 20),
                        "payload": base64.b64encode(frame).decode(),
                    },
                }
            )
            result.frames_in += 1
        await send(
            {
                "event": "stop",
                "streamSid": stream_sid,
                "stop": {"accountSid": "AC" + "0" * 32, "callSid": sid},
            }
        )
        reading.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reading
    result.frames_out = len(arrivals)
    result.answers, result.missing, result.gaps_ms = answers_in(arrivals, LEAD_FRAMES)
    return result


def answers_in(arrivals: Sequence[float], lead_frames: int) -> tuple[int, int, list[float]]:
    """The service's answers in the arrival times of its voiced frames: (answers, frames
    missing from them, jitter samples in ms).

    An answer is a run of arrivals less than 200 ms apart; after the line's pacing lead
    the service sends a frame every 20 ms, and the deviation from that is the jitter.
    A last answer shorter than the others was cut by the hang-up and is not counted.
    """
    bursts: list[list[float]] = []
    for at in arrivals:
        if bursts and at - bursts[-1][-1] < 0.2:
            bursts[-1].append(at)
        else:
            bursts.append([at])
    expected = round(ANSWER_SECONDS / FRAME)
    answers, missing, gaps_ms = 0, 0, []
    for burst in bursts:
        answers += 1
        missing += max(0, expected - len(burst))
        gaps = [b - a for a, b in zip(burst[lead_frames:], burst[lead_frames + 1 :], strict=False)]
        gaps_ms += [abs(gap - FRAME) * 1000 for gap in gaps]
    if bursts and len(bursts[-1]) < expected:
        missing -= expected - len(bursts[-1])
        answers -= 1
    return answers, missing, gaps_ms


# ----------------------------------------------------------------- the runs
async def streams_at(
    service: Service, count: int, seconds: float, speech: list[bytes]
) -> dict[str, Any]:
    rng = random.Random(count)
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:
        cpu_before, wall_before = service.cpu_seconds(), time.perf_counter()
        results = await asyncio.gather(
            *(
                hold_stream(
                    session,
                    service.base,
                    f"CA{count:04d}{i:028d}",
                    e164(2125550000 + rng.randrange(10_000)),
                    speech,
                    seconds,
                    rng.uniform(0, 2.0),
                )
                for i in range(count)
            )
        )
        cpu = service.cpu_seconds() - cpu_before
        wall = time.perf_counter() - wall_before
    ok = [r for r in results if r.failed is None]
    gaps = [g for r in ok for g in r.gaps_ms]
    return {
        "streams": count,
        "failed": len(results) - len(ok),
        "answers": sum(r.answers for r in ok),
        "frames_in": sum(r.frames_in for r in ok),
        "frames_out": sum(r.frames_out for r in ok),
        "jitter_p50": percentile(gaps, 50),
        "jitter_p99": percentile(gaps, 99),
        "jitter_max": max(gaps, default=float("nan")),
        "underruns": sum(r.underruns for r in ok),
        "missing": sum(r.missing for r in ok),
        "cpu_share": cpu / wall,
        "cpu_ms_per_stream_s": 1000 * cpu / (count * seconds),
        "rss_mib": service.rss_mib(),
        "why": sorted({r.failed for r in results if r.failed}),
    }


async def webhook_latency(
    service: Service, numbers: Sequence[int], requests: int, concurrency: int
) -> dict[str, float]:
    """Incoming-call webhooks from known callers, `concurrency` at a time."""
    rng = random.Random(requests + concurrency)
    url = f"{service.base}/twilio/voice"
    samples: list[float] = []
    statuses: set[int] = set()
    counter = iter(range(requests))

    async with aiohttp.ClientSession() as session:

        async def worker() -> None:
            for i in counter:
                fields = call_fields(f"CW{concurrency:02d}{i:030d}", e164(rng.choice(numbers)))
                headers = signed(url, fields)
                began = time.perf_counter()
                async with session.post(url, data=fields, headers=headers) as response:
                    await response.read()
                samples.append(time.perf_counter() - began)
                statuses.add(response.status)

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    assert statuses == {200}, statuses
    return {
        "requests": requests,
        "p50": percentile(samples, 50) * 1000,
        "p99": percentile(samples, 99) * 1000,
        "max": max(samples) * 1000,
    }


async def run(args: argparse.Namespace) -> int:
    pin(1)  # the load generator; the service gets CPU 0
    levels = [5, 20] if args.quick else args.streams
    seconds = 8.0 if args.quick else args.seconds
    contacts = 5_000 if args.quick else args.contacts
    requests = 200 if args.quick else args.requests
    speech = caller_speech()
    with tempfile.TemporaryDirectory(prefix="voicecrm-bench-twilio-") as tmp:
        folder = Path(tmp)
        database_url = f"sqlite+aiosqlite:///{folder / 'bench.db'}"
        print(f"[seeding {contacts:,} contacts]", file=sys.stderr, flush=True)
        seeded = await seed(
            database_url, contacts=contacts, hot_events=0, spare=0, rng=random.Random(7)
        )
        speech_runner = web.AppRunner(fake_speech_app())
        await speech_runner.setup()
        speech_port = free_port()
        await web.TCPSite(speech_runner, "127.0.0.1", speech_port).start()
        service = await start_service(folder, database_url, f"http://127.0.0.1:{speech_port}/v1")
        try:
            print(
                f"date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; "
                f"{os.cpu_count()} cpus; service pinned to cpu 0, Twilio's side to cpu 1"
            )
            print(
                f"\nMedia Streams held {seconds:g} s each at real time (a turn every 5 s: "
                f"the caller's sentence, the service's {ANSWER_SECONDS:g} s answer)"
            )
            header = (
                "streams failed answers  frames in  frames out  jitter p50 ms  p99 ms"
                "  max ms  underruns  missing  server CPU  CPU ms/stream-s  RSS MiB"
            )
            print(header)
            held: list[dict[str, Any]] = []
            for count in levels:
                print(f"[{count} streams]", file=sys.stderr, flush=True)
                row = await streams_at(service, count, seconds, speech)
                held.append(row)
                print(
                    f"{row['streams']:>7} {row['failed']:>6} {row['answers']:>7} "
                    f"{row['frames_in']:>10,} {row['frames_out']:>11,} "
                    f"{row['jitter_p50']:>14.2f} {row['jitter_p99']:>7.2f} "
                    f"{row['jitter_max']:>7.1f} {row['underruns']:>10} {row['missing']:>8} "
                    f"{row['cpu_share']:>10.0%} {row['cpu_ms_per_stream_s']:>16.2f} "
                    f"{row['rss_mib']:>8.0f}"
                    + (f"  ({'; '.join(row['why'])})" if row["why"] else "")
                )
            print(f"\nincoming-call webhook, known callers among {seeded.contacts:,} contacts")
            print("concurrency  requests  p50 ms  p99 ms  max ms")
            hooks = []
            for concurrency in (1, 8):
                hook = await webhook_latency(service, seeded.numbers, requests, concurrency)
                hooks.append(hook)
                print(
                    f"{concurrency:>11} {hook['requests']:>9,} {hook['p50']:>7.2f} "
                    f"{hook['p99']:>7.2f} {hook['max']:>7.1f}"
                )
        finally:
            await stop_service(service)
            await speech_runner.cleanup()
    good = [
        r["streams"]
        for r in held
        if not r["failed"]
        and r["jitter_p99"] < 60
        and not r["underruns"]
        and not r["missing"]
        and r["cpu_share"] < 0.95
    ]
    best = max(good, default=0)
    print(
        f"\ntarget: >= 150 streams on one core, p99 jitter < 60 ms, no lost audio: "
        f"{'met' if best >= 150 else 'not met'} (held cleanly up to {best} of {levels})"
    )
    sequential = hooks[0]["p99"]
    print(
        f"target: webhook p99 < 15 ms: {'met' if sequential < 15 else 'not met'} "
        f"({sequential:.2f} ms one at a time, {hooks[1]['p99']:.2f} ms eight at a time)"
    )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.twilio_streams",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--quick", action="store_true", help="5 and 20 streams, 5,000 contacts")
    parser.add_argument("--streams", type=int, nargs="+", default=[50, 100, 150, 200])
    parser.add_argument("--seconds", type=float, default=30.0, help="how long each stream lasts")
    parser.add_argument("--contacts", type=int, default=1_000_000)
    parser.add_argument("--requests", type=int, default=2000, help="webhooks timed per run")
    return asyncio.run(run(parser.parse_args(argv)))


if __name__ == "__main__":
    raise SystemExit(main())
