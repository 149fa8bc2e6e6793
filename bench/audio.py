"""`python -m bench.audio`: what the voice pipeline costs per frame and what it adds to a turn.

Two questions, two parts:

- **Throughput.** How many frames a second one core pushes through the
  pipeline, and so how many calls it carries at real time (50 frames a second
  each): the listening path (mu-law decode, WebRTC VAD, turn detection) on real
  speech with line hiss between phrases, the speaking path (24 kHz synthesis
  resampled to 8 kHz, framed, mu-law encoded), both together as a call where
  both sides talk all the time, and the real asyncio `Listener` over an
  in-memory line, so the coroutine and event-loop overhead is counted too.
- **Latency under load.** N `VoiceCall`s at once in one event loop (one core),
  each on an `EmulatedLine` ticking at real time, holding a short
  conversation with instant fake providers: whatever time passes between the
  end of the caller's speech and the first frame of the answer is the
  service's own (`TurnLatency.service_seconds`). The event loop's lag and the
  process's CPU share say whether the core was saturated while it was measured.

Targets (the issue's): at least 200 concurrent calls per core at real time, and
service-added latency under 20 ms at p99. Figures go to stdout, progress to
stderr; the exit status says whether the bench ran, not whether targets were met.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import gc
import io
import os
import platform
import random
import resource
import shutil
import statistics
import subprocess
import time
import wave
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib.metadata import version

import numpy as np

from bench.report import progress, steal_share, steal_ticks
from bench.stats import Distribution
from voicecrm.audio.codec import pcm16_to_ulaw, ulaw_to_pcm16
from voicecrm.audio.frames import (
    FRAME_MS,
    PCM_FRAME_BYTES,
    SAMPLE_RATE,
    ULAW_FRAME_BYTES,
    Framer,
)
from voicecrm.audio.resample import StreamResampler, resample
from voicecrm.audio.turns import SpeechEnded, TurnDetector, TurnSettings
from voicecrm.audio.vad import WebRtcVad
from voicecrm.calls.interface import (
    CallInfo,
    Direction,
    InputKind,
    TransferOutcome,
    TransferStatus,
)
from voicecrm.calls.latency import TurnLatency
from voicecrm.telephony.simulator.audio_line import (
    CallerAction,
    EmulatedLine,
    HangUp,
    Silence,
    Speak,
    WaitForTurn,
)
from voicecrm.voice.call import VoiceCall
from voicecrm.voice.line import LineClosed, LineEvent, Media, Whisper
from voicecrm.voice.listener import Listener
from voicecrm.voice.ports import PcmAudio, Transcript

FRAMES_PER_SECOND = 1000 // FRAME_MS  # 50: what one call costs a second, each way
CALLS_PER_CORE_TARGET = 200
SERVICE_P99_TARGET_MS = 20.0

ESPEAK = shutil.which("espeak-ng") or next(
    (path for path in ("/usr/bin/espeak-ng",) if os.access(path, os.X_OK)), None
)
TTS_RATE = 24000  # what streaming TTS providers usually send
TTS_CHUNK_BYTES = TTS_RATE // 10 * 2  # 100 ms of 16-bit samples, as a stream delivers it
SECONDS_PER_WORD = 0.3

# What the caller says. The throughput signal cycles through all three; every
# call of the latency run says the first, rendered once and shared.
PHRASES = (
    "I would like to book an appointment for Tuesday.",
    "Can you tell me what time you open tomorrow morning?",
    "My name is Maria and I am calling about my order.",
)
GREETING = "Hello, how can I help?"
ANSWER = "Sure, we can do that for you."


# ----------------------------------------------------------------- audio


@functools.lru_cache(maxsize=16)
def render(text: str, *, words_per_minute: int = 160) -> bytes:
    """`text` spoken by espeak-ng as 8 kHz 16-bit PCM, leading silence trimmed.

    Real speech, not a tone: the VAD's verdicts and the turn detector's
    timing depend on syllables and pauses, and a synthetic signal would make
    both look cheaper and steadier than a caller does.
    """
    if ESPEAK is None:
        raise RuntimeError("espeak-ng is needed to render the caller's speech (apt install it)")
    wav = subprocess.run(
        [ESPEAK, "-v", "en-us", "-s", str(words_per_minute), "--stdout", "--", text],
        check=True,
        capture_output=True,
    ).stdout
    with wave.open(io.BytesIO(wav)) as reader:
        source_rate = reader.getframerate()
        pcm = reader.readframes(reader.getnframes())
    samples = np.frombuffer(resample(pcm, source_rate, SAMPLE_RATE), dtype="<i2")
    loud = np.flatnonzero(np.abs(samples) > 300)
    return samples[loud[0] :].tobytes() if loud.size else samples.tobytes()


def hiss(seconds: float, seed: int, *, level: float = 30.0) -> bytes:
    """Line noise for the caller's pauses: a real line is never digitally silent, and
    the VAD's level floor, not its classifier, is what should turn this away."""
    samples = np.random.default_rng(seed).normal(0.0, level, int(seconds * SAMPLE_RATE))
    return samples.astype("<i2").tobytes()


def ulaw_frames(pcm: bytes) -> list[bytes]:
    framer = Framer(ULAW_FRAME_BYTES)
    frames = framer.push(pcm16_to_ulaw(pcm))
    tail = framer.flush(0xFF)
    return frames + ([tail] if tail else [])


def caller_signal(seconds: float, seed: int = 7) -> list[bytes]:
    """About `seconds` of a caller's side as a carrier sends it: phrases, pauses of 0.5 to 3 s."""
    rng = random.Random(seed)
    phrases = [render(p) for p in PHRASES]
    wanted = int(seconds * SAMPLE_RATE) * 2
    parts: list[bytes] = []
    size = 0
    while size < wanted:
        for part in (rng.choice(phrases), hiss(rng.uniform(0.5, 3.0), rng.randrange(1 << 30))):
            parts.append(part)
            size += len(part)
    return ulaw_frames(b"".join(parts)[:wanted])


@functools.lru_cache(maxsize=64)
def tone(seconds: float, *, rate: int = TTS_RATE, hz: int = 440) -> bytes:
    t = np.arange(int(seconds * rate)) / rate
    return (8000 * np.sin(2 * np.pi * hz * t)).astype("<i2").tobytes()


# ----------------------------------------------------------------- instant providers


class FixedTranscriber:
    """Speech-to-text that answers at once, so a turn's time is the pipeline's alone."""

    label = "instant bench transcriber"

    async def transcribe(
        self, audio: PcmAudio, *, language: str, hints: tuple[str, ...] = ()
    ) -> Transcript:
        return Transcript("I would like to book an appointment for Tuesday", confidence=0.9)


class ToneVoice:
    """Text-to-speech that answers at once with a tone, streamed in 100 ms chunks at
    24 kHz as a provider would send it, so resampling and framing run as for real.

    By default every chunk is ready at once, as if the whole answer had already
    arrived: nothing gives the event loop back between chunks. With
    `yield_between_chunks` each chunk costs a pass through the loop, as a chunk
    read from a provider's socket does.
    """

    label = "instant bench voice"

    def __init__(self, *, yield_between_chunks: bool = False) -> None:
        self._yield = yield_between_chunks

    async def synthesize(
        self, text: str, *, voice: str | None, language: str
    ) -> AsyncGenerator[PcmAudio, None]:
        pcm = tone(max(1, len(text.split())) * SECONDS_PER_WORD)
        for start in range(0, len(pcm), TTS_CHUNK_BYTES):
            if self._yield and start:
                await asyncio.sleep(0)
            yield PcmAudio(pcm[start : start + TTS_CHUNK_BYTES], TTS_RATE)


# ----------------------------------------------------------------- throughput


@dataclass(frozen=True, slots=True)
class PathRate:
    """Frames a second of one path, one figure per round (each at least `min_round_seconds`)."""

    name: str
    rounds: tuple[float, ...]
    note: str = ""
    judged: bool = False  # the figure the calls-per-core target is read from

    @property
    def median(self) -> float:
        return statistics.median(self.rounds)

    @property
    def best(self) -> float:
        return max(self.rounds)

    @property
    def us_per_frame(self) -> float:
        return 1e6 / self.median

    @property
    def calls_per_core(self) -> float:
        """Calls one core carries at real time: each sends and/or receives 50 frames a second."""
        return self.median / FRAMES_PER_SECOND


def timed_rounds(one_pass: Callable[[], int], rounds: int, min_round_seconds: float) -> list[float]:
    """Frames a second over `rounds` rounds of repeated passes, after one untimed pass.

    A round repeats the pass until it has run `min_round_seconds`, so short
    passes are not lost in the clock's and the scheduler's noise; the spread
    between rounds is what a shared machine does to the figure.
    """
    one_pass()  # warm: first calls into C libraries, allocator, caches
    rates: list[float] = []
    clock = time.perf_counter
    for _ in range(rounds):
        frames = 0
        started = clock()
        while True:
            frames += one_pass()
            elapsed = clock() - started
            if elapsed >= min_round_seconds:
                break
        rates.append(frames / elapsed)
    return rates


def listen_pass(frames: Sequence[bytes]) -> Callable[[], int]:
    """The Listener's per-frame work without asyncio: decode, VAD, turn detector."""
    vad = WebRtcVad()
    detector = TurnDetector(TurnSettings())

    def run() -> int:
        decode, is_speech, feed = ulaw_to_pcm16, vad.is_speech, detector.feed
        for ulaw in frames:
            pcm = decode(ulaw)
            feed(pcm, is_speech(pcm))
        return len(frames)

    return run


def decode_pass(frames: Sequence[bytes]) -> Callable[[], int]:
    def run() -> int:
        decode = ulaw_to_pcm16
        for ulaw in frames:
            decode(ulaw)
        return len(frames)

    return run


def vad_pass(pcm_frames: Sequence[bytes]) -> Callable[[], int]:
    is_speech = WebRtcVad().is_speech

    def run() -> int:
        for pcm in pcm_frames:
            is_speech(pcm)
        return len(pcm_frames)

    return run


def turns_pass(pcm_frames: Sequence[bytes], verdicts: Sequence[bool]) -> Callable[[], int]:
    detector = TurnDetector(TurnSettings())
    pairs = list(zip(pcm_frames, verdicts, strict=True))

    def run() -> int:
        feed = detector.feed
        for pcm, voiced in pairs:
            feed(pcm, voiced)
        return len(pairs)

    return run


def speak_sentence(pcm: bytes, on_frame: Callable[[bytes], None] | None = None) -> int:
    """What `Playback` does to one sentence, minus asyncio: a fresh stream resampler
    (one per sentence, as Playback makes), 100 ms chunks to 8 kHz, 20 ms frames,
    mu-law; the filter's tail and a padded last frame at the end."""
    resampler = StreamResampler(TTS_RATE, SAMPLE_RATE)
    framer = Framer(PCM_FRAME_BYTES)
    encode = pcm16_to_ulaw
    count = 0
    for start in range(0, len(pcm), TTS_CHUNK_BYTES):
        for frame in framer.push(resampler.process(pcm[start : start + TTS_CHUNK_BYTES])):
            encoded = encode(frame)
            count += 1
            if on_frame is not None:
                on_frame(encoded)
    tail = framer.push(resampler.flush())
    last = framer.flush(0)
    for frame in [*tail, *([last] if last else [])]:
        encoded = encode(frame)
        count += 1
        if on_frame is not None:
            on_frame(encoded)
    return count


def speak_pass(sentence: bytes) -> Callable[[], int]:
    return lambda: speak_sentence(sentence)


def duplex_pass(frames: Sequence[bytes], sentence: bytes) -> Callable[[], int]:
    """Both sides at once, one caller frame heard for every answer frame made: a call in
    which the receptionist never stops talking, the worst case for one call's cost."""
    vad = WebRtcVad()
    detector = TurnDetector(TurnSettings())
    decode, is_speech, feed = ulaw_to_pcm16, vad.is_speech, detector.feed
    size = len(frames)
    position = 0

    def hear(_answer: bytes) -> None:
        nonlocal position
        pcm = decode(frames[position])
        feed(pcm, is_speech(pcm))
        position = (position + 1) % size

    def run() -> int:
        done = 0
        while done < size:
            done += speak_sentence(sentence, hear)
        return done

    return run


class MemoryLine:
    """An `AudioLine` that hands out prepared caller frames as fast as it is read.

    With `yield_each_frame`, every frame costs one pass through the event loop,
    as a frame read from a carrier's socket does; without it, the reader never
    gives the loop back, which isolates the coroutine overhead.
    """

    def __init__(self, events: Sequence[Media], *, yield_each_frame: bool) -> None:
        self._events = events
        self._yield = yield_each_frame
        self._info = CallInfo(
            call_id="bench-memory",
            direction=Direction.INBOUND,
            from_number="+14155550123",
            to_number="+14155550100",
            channel="bench",
        )

    @property
    def info(self) -> CallInfo:
        return self._info

    async def events(self) -> AsyncIterator[LineEvent]:
        if self._yield:
            for event in self._events:
                await asyncio.sleep(0)
                yield event
        else:
            for event in self._events:
                yield event
        yield LineClosed("done")

    async def send(self, frame: bytes) -> None:
        return None

    async def drain(self) -> None:
        return None

    def unplayed_frames(self) -> int:
        return 0

    async def clear(self) -> None:
        return None

    async def play(self, url: str) -> None:
        return None

    async def transfer(
        self,
        target: str,
        *,
        whisper: Whisper | None,
        ring_timeout: float,
        caller_id: str | None,
    ) -> TransferOutcome:
        return TransferOutcome(status=TransferStatus.FAILED)

    async def hangup(self, reason: str) -> None:
        return None


async def _nobody_to_interrupt() -> None:
    return None


def listener_pass(
    runner: asyncio.Runner, frames: Sequence[bytes], *, yield_each_frame: bool
) -> Callable[[], int]:
    """The real `Listener.run` over a `MemoryLine`: the pipeline plus asyncio's share."""
    events = [Media(frame) for frame in frames]

    async def one() -> int:
        line = MemoryLine(events, yield_each_frame=yield_each_frame)
        listener = Listener(
            line,
            WebRtcVad(),
            TurnSettings(),
            on_speech=_nobody_to_interrupt,
            clock=time.perf_counter,
        )
        await listener.run()
        return listener.frames

    return lambda: runner.run(one())


@dataclass(frozen=True, slots=True)
class Throughput:
    paths: list[PathRate]
    signal_seconds: float
    voiced_share: float
    utterances: int
    resampler_setup_us: float


def measure_throughput(
    *, signal_seconds: float = 60.0, rounds: int = 7, min_round_seconds: float = 0.25
) -> Throughput:
    """Every path on the same caller signal, one after another, in this thread."""
    frames = caller_signal(signal_seconds)
    pcm_frames = [ulaw_to_pcm16(f) for f in frames]
    vad = WebRtcVad()
    verdicts = [vad.is_speech(p) for p in pcm_frames]
    detector = TurnDetector(TurnSettings())
    utterances = sum(
        isinstance(detector.feed(p, v), SpeechEnded)
        for p, v in zip(pcm_frames, verdicts, strict=True)
    )
    sentence = tone(10 * SECONDS_PER_WORD)  # a ten-word sentence, 3 s
    paths: list[PathRate] = []

    def measure(
        name: str, one_pass: Callable[[], int], note: str = "", judged: bool = False
    ) -> None:
        progress(f"throughput: {name}")
        rates = timed_rounds(one_pass, rounds, min_round_seconds)
        paths.append(PathRate(name, tuple(rates), note, judged))

    measure("listen: decode + VAD + turns", listen_pass(frames), "the Listener's per-frame work")
    measure("  decode only", decode_pass(frames), "audioop.ulaw2lin")
    measure("  VAD only", vad_pass(pcm_frames), "level floor + webrtcvad")
    measure("  turn detector only", turns_pass(pcm_frames, verdicts))
    measure(
        "speak: resample + frame + encode",
        speak_pass(sentence),
        "24 kHz -> 8 kHz, 3 s sentences",
    )
    measure(
        "full duplex: listen + speak",
        duplex_pass(frames, sentence),
        "frames/s = call-seconds/s x 50",
        judged=True,
    )
    with asyncio.Runner() as runner:
        measure(
            "Listener.run, no loop pass",
            listener_pass(runner, frames, yield_each_frame=False),
            "asyncio coroutine overhead",
        )
        measure(
            "Listener.run, a loop pass a frame",
            listener_pass(runner, frames, yield_each_frame=True),
            "as frames read from a socket",
        )

    setups = 200
    started = time.perf_counter()
    for _ in range(setups):
        StreamResampler(TTS_RATE, SAMPLE_RATE)
    setup_us = (time.perf_counter() - started) / setups * 1e6
    return Throughput(
        paths=paths,
        signal_seconds=len(frames) / FRAMES_PER_SECOND,
        voiced_share=sum(verdicts) / len(verdicts),
        utterances=utterances,
        resampler_setup_us=setup_us,
    )


# ----------------------------------------------------------------- latency under load


@dataclass
class LatencyRun:
    calls: int
    turns_per_call: int
    tick: float
    streaming_tts: bool = False
    gc_frozen: int = 0  # objects moved out of the collector's reach before the run
    latencies: list[TurnLatency] = field(default_factory=list)
    lag_s: list[float] = field(default_factory=list)
    gc_pauses_s: list[float] = field(default_factory=list)
    cpu_s: float = 0.0
    wall_s: float = 0.0
    cpu_pressure: float | None = None  # share of the run some task on the machine waited for a CPU
    steal: float | None = None  # share of the machine's CPU time the hypervisor kept
    preempted: int = 0  # times the kernel took the CPU from this process
    peak_rss_mib: float = 0.0
    timeouts: int = 0
    errors: list[str] = field(default_factory=list)

    @property
    def service_s(self) -> list[float]:
        return [t.service_seconds for t in self.latencies if t.service_seconds is not None]

    @property
    def turns(self) -> int:
        return len(self.service_s)

    def service(self) -> Distribution | None:
        return _distribution(self.service_s)

    def stages(self) -> dict[str, Distribution | None]:
        """Where the service time went, stage by stage, provider waits taken out of each."""
        done = [t for t in self.latencies if t.complete]
        heard = [t for t in done if t.transcript_ready is not None and t.first_audio is not None]
        return {
            "endpoint -> transcript": _distribution(
                [t.transcript_ready - t.speech_end - t.stt_wait for t in heard]  # type: ignore[operator]
            ),
            "transcript -> first audio": _distribution(
                [t.first_audio - t.transcript_ready - t.tts_wait for t in heard]  # type: ignore[operator]
            ),
            "first audio -> first frame": _distribution(
                [t.first_frame - t.first_audio for t in heard]  # type: ignore[operator]
            ),
        }

    def lag(self) -> Distribution | None:
        return _distribution(self.lag_s)

    @property
    def cpu_share(self) -> float:
        return self.cpu_s / self.wall_s if self.wall_s else 0.0


def _distribution(seconds: Sequence[float]) -> Distribution | None:
    return Distribution.of([round(s * 1e9) for s in seconds]) if seconds else None


def cpu_pressure_us() -> int | None:
    """Microseconds any task on the machine has waited for a CPU (Linux PSI), or None.

    A shared machine's other work is invisible in this process's own figures
    except as stretched tails; the pressure over the run says how much of it
    there was.
    """
    try:
        with open("/proc/pressure/cpu") as pressure:
            some = pressure.readline().split()
    except OSError:
        return None
    fields = dict(item.split("=", 1) for item in some[1:])
    return int(fields["total"]) if "total" in fields else None


def peak_rss_mib() -> float:
    """Peak resident set of this process so far (Linux reports `ru_maxrss` in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class _GcWatch:
    """Times each garbage collection: a pause stops every call in the loop at once."""

    def __init__(self, pauses: list[float]) -> None:
        self._pauses = pauses
        self._started = 0.0

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        else:
            self._pauses.append(time.perf_counter() - self._started)


async def _probe_lag(samples: list[float], stop: asyncio.Event, period: float) -> None:
    """How late a 20 ms sleep wakes: the delay every frame of every call also sees."""
    clock = time.perf_counter
    while not stop.is_set():
        asked = clock()
        await asyncio.sleep(period)
        samples.append(max(0.0, clock() - asked - period))


async def _converse(call: VoiceCall, turns: int, run: LatencyRun) -> None:
    """The receptionist's side: greet, then hear a question and answer it, `turns` times."""
    await call.say(GREETING)
    for _ in range(turns):
        heard = await call.gather(
            prompt=None, inputs=frozenset({InputKind.SPEECH}), input_timeout=20.0
        )
        if heard.empty:
            run.timeouts += 1
        await call.say(ANSWER)
    await call.hangup("completed")


async def latency_run(
    calls: int,
    turns: int,
    *,
    tick: float = 0.02,
    stagger_seconds: float = 1.0,
    think_seconds: float = 1.5,
    streaming_tts: bool = False,
    seed: int = 1,
    phrase: str = PHRASES[0],
) -> LatencyRun:
    """`calls` conversations at once in this event loop; every `TurnLatency` they record.

    Each call starts at a random moment in the first `stagger_seconds`, so the
    lines do not all tick in the same millisecond, and the caller thinks for a
    random 0 to `think_seconds` before each turn, so the calls drift apart as
    real ones do instead of all answering in the same second of every turn.
    """
    speech = render(phrase)
    rng = random.Random(seed)
    run = LatencyRun(calls=calls, turns_per_call=turns, tick=tick, streaming_tts=streaming_tts)

    def script() -> list[CallerAction]:
        actions: list[CallerAction] = []
        for _ in range(turns):
            actions += [WaitForTurn(), Silence(rng.uniform(0.0, think_seconds)), Speak(speech)]
        return [*actions, WaitForTurn(), HangUp()]

    async def one(index: int, delay: float, actions: list[CallerAction]) -> None:
        await asyncio.sleep(delay)
        info = CallInfo(
            call_id=f"bench-audio-{index}",
            direction=Direction.INBOUND,
            from_number=f"+1415555{index % 10000:04d}",
            to_number="+14155550100",
            channel="bench",
        )
        line = EmulatedLine(info, actions, tick=tick)
        voice = ToneVoice(yield_between_chunks=streaming_tts)
        call = VoiceCall(line, stt=FixedTranscriber(), tts=voice)
        try:
            async with call:
                await _converse(call, turns, run)
        except Exception as error:  # a failed call is reported, and the others carry on
            run.errors.append(f"{info.call_id}: {type(error).__name__}: {error}")
        finally:
            run.latencies.extend(call.latencies)

    stop = asyncio.Event()
    probe = asyncio.create_task(_probe_lag(run.lag_s, stop, 0.02))
    watch = _GcWatch(run.gc_pauses_s)
    gc.callbacks.append(watch)
    run.gc_frozen = gc.get_freeze_count()
    pressure, stolen = cpu_pressure_us(), steal_ticks()
    switches = resource.getrusage(resource.RUSAGE_SELF).ru_nivcsw
    cpu, wall = time.process_time(), time.perf_counter()
    try:
        async with asyncio.TaskGroup() as group:
            for index in range(calls):
                group.create_task(one(index, rng.uniform(0.0, stagger_seconds), script()))
    finally:
        run.cpu_s = time.process_time() - cpu
        run.wall_s = time.perf_counter() - wall
        run.preempted = resource.getrusage(resource.RUSAGE_SELF).ru_nivcsw - switches
        pressure_after, stolen_after = cpu_pressure_us(), steal_ticks()
        if pressure is not None and pressure_after is not None and run.wall_s:
            run.cpu_pressure = (pressure_after - pressure) / 1e6 / run.wall_s
        run.steal = steal_share(stolen, stolen_after, run.wall_s)
        gc.callbacks.remove(watch)
        stop.set()
        await probe
    run.peak_rss_mib = peak_rss_mib()
    return run


# ----------------------------------------------------------------- report


def _n(value: float, digits: int = 0) -> str:
    return f"{value:,.{digits}f}"


def _calls(count: int) -> str:
    return f"{count} call" if count == 1 else f"{count} calls"


def _ms(distribution: Distribution | None, p: float) -> str:
    return "-" if distribution is None else f"{distribution.percentile_ms(p):.2f}"


def _max_ms(distribution: Distribution | None) -> str:
    return "-" if distribution is None else f"{distribution.max_ms:.2f}"


def _table(
    header: Sequence[str], rows: Sequence[Sequence[str]], *, left: Sequence[int] = (0,)
) -> list[str]:
    """Columns sized to their widest cell; the `left` columns flush left, numbers right."""
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]

    def line(row: Sequence[str]) -> str:
        cells = [
            cell.ljust(width) if i in left else cell.rjust(width)
            for i, (cell, width) in enumerate(zip(row, widths, strict=True))
        ]
        return "  ".join(cells).rstrip()

    return [line(header), "  ".join("-" * w for w in widths), *(line(r) for r in rows)]


def throughput_lines(result: Throughput) -> list[str]:
    rows = [
        [
            p.name,
            f"{p.us_per_frame:.2f}",
            _n(p.median),
            _n(p.best),
            _n(p.calls_per_core),
            p.note,
        ]
        for p in result.paths
    ]
    header = ["path", "us/frame", "frames/s", "best frames/s", "calls/core", "note"]
    return [
        f"throughput, one thread: {result.signal_seconds:.0f} s of caller audio "
        f"({result.voiced_share:.0%} of frames voiced, {result.utterances} utterances); "
        f"frames/s is the median round; calls/core = frames/s / {FRAMES_PER_SECOND}",
        *_table(header, rows, left=(0, 5)),
        f"a new StreamResampler (Playback makes one per sentence): "
        f"{result.resampler_setup_us:.0f} us",
    ]


def latency_lines(runs: Sequence[LatencyRun]) -> list[str]:
    rows = []
    for run in runs:
        service, lag = run.service(), run.lag()
        rows.append(
            [
                str(run.calls),
                str(run.turns),
                _ms(service, 50),
                _ms(service, 99),
                _max_ms(service),
                _ms(lag, 50),
                _ms(lag, 99),
                _max_ms(lag),
                f"{run.cpu_share:.0%}",
                "-" if run.cpu_pressure is None else f"{run.cpu_pressure:.0%}",
                "-" if run.steal is None else f"{run.steal:.0%}",
                _n(run.preempted),
                f"{max(run.gc_pauses_s, default=0.0) * 1000:.1f}",
                f"{run.peak_rss_mib:.0f}",
                f"{run.wall_s:.1f}",
                str(run.timeouts + len(run.errors)),
            ]
        )
    header = [
        "calls",
        "turns",
        "service p50 ms",
        "p99",
        "max",
        "loop lag p50 ms",
        "p99",
        "max",
        "CPU",
        "waiting",
        "steal",
        "preempted",
        "GC max ms",
        "peak RSS MiB",
        "wall s",
        "failed",
    ]
    stage_rows = []
    for run in runs:
        for stage, distribution in run.stages().items():
            stage_rows.append(
                [
                    str(run.calls),
                    stage,
                    _ms(distribution, 50),
                    _ms(distribution, 99),
                    _max_ms(distribution),
                ]
            )
    tick = runs[0].tick if runs else 0.02
    pace = "real time" if tick == 0.02 else f"a {tick * 1000:g} ms tick, not real time"
    streamed = bool(runs) and runs[0].streaming_tts
    chunks = "a loop pass apart" if streamed else "all ready at once"
    frozen = max((run.gc_frozen for run in runs), default=0)
    collector = f"; gc.freeze() had set {_n(frozen)} objects aside" if frozen else ""
    return [
        f"latency under load: N VoiceCalls on EmulatedLines ({pace}) in one event loop, "
        f"instant providers (TTS chunks {chunks}); service = end of caller speech to first "
        f"answer frame sent, minus provider waits{collector}",
        *_table(header, rows, left=()),
        "CPU = process CPU time / wall time (100% = one core busy); loop lag = how late a "
        "20 ms sleep woke; waiting = share of the run some task on the machine waited for a "
        "CPU (PSI: the noise of other work); steal = share of the VM's CPU time the hypervisor "
        "kept; preempted = involuntary context switches of "
        "this process; GC max = longest collection; peak RSS = the process's so far",
        "",
        "where the service time goes (provider waits taken out of each stage)",
        *_table(["calls", "stage", "p50 ms", "p99 ms", "max ms"], stage_rows, left=(1,)),
    ]


def verdict_lines(result: Throughput | None, runs: Sequence[LatencyRun]) -> list[str]:
    """One line per target, judged from the figures just measured."""
    lines: list[str] = []
    if result is not None:
        judged = next(p for p in result.paths if p.judged)
        listen = result.paths[0]
        met = judged.calls_per_core >= CALLS_PER_CORE_TARGET
        detail = (
            f"{_n(judged.calls_per_core)} calls/core, {judged.name.split(':')[0]}; "
            f"{_n(listen.calls_per_core)} listening only"
        )
        if runs:
            busiest = max(runs, key=lambda r: r.calls)
            if busiest.cpu_share > 0:
                # A faster tick makes each call worth that many calls at real time.
                at_real_time = busiest.calls / busiest.cpu_share * FRAME_MS / 1000 / busiest.tick
                detail += (
                    f"; the whole event loop at {_calls(busiest.calls)} used "
                    f"{busiest.cpu_share:.0%} of a core: about {_n(at_real_time)} calls/core "
                    f"with the emulated carrier and asyncio counted"
                )
        lines.append(
            f"target: >= {CALLS_PER_CORE_TARGET} concurrent calls per core at real time: "
            f"{'met' if met else 'NOT MET'} ({detail})"
        )
    if runs:
        figures = []
        met = True
        for run in runs:
            service = run.service()
            if service is None or run.errors:
                met = False
                figures.append(f"{_calls(run.calls)}: no figure")
                continue
            p99 = service.percentile_ms(99)
            met = met and p99 < SERVICE_P99_TARGET_MS
            figures.append(f"{_calls(run.calls)}: {p99:.2f} ms")
        lines.append(
            f"target: service-added latency p99 < {SERVICE_P99_TARGET_MS:g} ms: "
            f"{'met' if met else 'NOT MET'} ({', '.join(figures)})"
        )
    return lines


def machine_lines() -> list[str]:
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())

    def of(name: str) -> str:
        try:
            return version(name)
        except Exception:
            return "?"

    return [
        f"date: {datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')}",
        f"machine: {platform.platform()}, {os.cpu_count()} cpus, load average {load}",
        f"python: {platform.python_implementation()} {platform.python_version()}; "
        f"numpy {of('numpy')}, soxr {of('soxr')}, webrtcvad-wheels {of('webrtcvad-wheels')}",
    ]


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m bench.audio",
        description="The audio pipeline benchmark: frames per second per core with VAD on, "
        "and service-added latency per turn at 1, 50 and 200 concurrent calls.",
    )
    p.add_argument("--quick", action="store_true", help="a short smoke run (1 and 20 calls)")
    p.add_argument(
        "--calls",
        type=int,
        action="append",
        metavar="N",
        help="concurrent calls for a latency run; repeatable (default 1, 50, 200)",
    )
    p.add_argument("--turns", type=int, help="caller turns per call (default 5, quick 2)")
    p.add_argument(
        "--tick",
        type=float,
        default=0.02,
        help="seconds per 20 ms frame on the emulated lines (default 0.02: real time)",
    )
    p.add_argument(
        "--streaming-tts",
        action="store_true",
        help="the fake voice gives the event loop back between chunks, as a network stream does",
    )
    p.add_argument(
        "--gc-freeze",
        action="store_true",
        help="gc.freeze() before each latency run, as a service could once it has started",
    )
    p.add_argument("--seconds", type=float, help="caller audio for throughput (default 60)")
    p.add_argument("--rounds", type=int, help="timed rounds per throughput path (default 7)")
    p.add_argument("--skip-throughput", action="store_true")
    p.add_argument("--skip-latency", action="store_true")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    quick = args.quick
    calls = args.calls or ([1, 20] if quick else [1, 50, 200])
    turns = args.turns or (2 if quick else 5)
    for line in machine_lines():
        print(line, flush=True)
    print(flush=True)

    result: Throughput | None = None
    if not args.skip_throughput:
        result = measure_throughput(
            signal_seconds=args.seconds or (10.0 if quick else 60.0),
            rounds=args.rounds or (3 if quick else 7),
            min_round_seconds=0.05 if quick else 0.25,
        )
        for line in throughput_lines(result):
            print(line, flush=True)
        print(flush=True)

    runs: list[LatencyRun] = []
    if not args.skip_latency:
        for count in calls:
            progress(f"latency: {count} calls, {turns} turns each")
            if args.gc_freeze:
                gc.collect()
                gc.freeze()  # what the imports and the last run left is never scanned again
            run = asyncio.run(
                latency_run(count, turns, tick=args.tick, streaming_tts=args.streaming_tts)
            )
            runs.append(run)
            for error in run.errors[:5]:
                progress(f"  failed call: {error}")
        for line in latency_lines(runs):
            print(line, flush=True)
        print(flush=True)

    for line in verdict_lines(result, runs):
        print(line, flush=True)
    return 1 if any(run.errors for run in runs) else 0


if __name__ == "__main__":
    raise SystemExit(main())
