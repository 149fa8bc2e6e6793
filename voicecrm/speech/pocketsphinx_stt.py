"""Offline speech-to-text with PocketSphinx: low accuracy, but no server and no key.

It lets a receptionist without a speech server still understand short, clear
answers ("billing", "my name is John Smith"). The `pocketsphinx` package ships a
US English acoustic model, language model and dictionary, so that is the only
language it offers; anything else is `SpeechUnavailable`.

Decoding runs in worker processes, not threads: PocketSphinx holds the GIL for
the whole of `process_raw()` and `end_utt()` (about 0.3 s per second of speech),
so a decoder in a thread would still freeze the event loop, and with it every
call's audio, for that long. Each worker is this module run as a plain
subprocess (`python -m voicecrm.speech.pocketsphinx_stt`), not a
`multiprocessing` child: nothing of the host program is re-imported into it,
and a worker can be killed the moment its caller hangs up. A worker builds its
decoder once (about 0.5 s and 90 MB) and decodes one utterance at a time, so
decoders are reused and never shared.

The protocol on the worker's stdin and stdout is one JSON line per message: the
request line is followed by the raw samples it announces, the answer is
`{"text": ...}` or `{"error": ...}`; the worker announces `{"ready": true}` once
its decoder is built and exits when its stdin closes.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import re
import signal
import sys
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import soxr

from voicecrm.voice.ports import PcmAudio, SpeechProviderError, SpeechUnavailable, Transcript

MODEL_SAMPLE_RATE = 16000
DEFAULT_MAX_WORKERS = 2
DEFAULT_HINT_DEPTH = 10
DEFAULT_TIMEOUT = 30.0
# Building a decoder takes about 0.5 s; a worker that is not ready far later is stuck.
WORKER_START_TIMEOUT = 60.0
# Peak below about -54 dBFS: line noise at most. PocketSphinx "hears" words in
# digital silence ("dog"), so such audio is not decoded at all.
_SILENCE_PEAK = 64
_PACKAGE_ROOT = str(Path(__file__).resolve().parents[2])
_WORKER_MODULE = "voicecrm.speech.pocketsphinx_stt"


class PocketSphinxSpeechToText:
    """English speech-to-text in up to `max_workers` worker processes.

    Workers start on demand (or with `warm_up()`) and stay for the next
    utterance; more utterances than workers at once wait their turn. `timeout`
    bounds each transcription, the wait for a worker included. A transcription
    that is cancelled or times out kills its worker, whose decoder is then in an
    unknown state; a new one starts when needed. `aclose()` stops them all. The
    provider belongs to the event loop it is first used in.

    Hints re-rank, never replace: when the best hypothesis mentions none of the
    hints but one of the next `hint_depth - 1` hypotheses of the same audio
    does, that one wins ("it comes" becomes "accounts" when "accounts" is a menu
    choice). When none of the alternatives mentions a hint, the caller said
    something else, and the best hypothesis is returned as it is.

    Every utterance is decoded from the same starting state, whatever the worker
    decoded before, so a transcription does not depend on which worker (or
    which earlier caller) it lands on.
    """

    def __init__(
        self,
        *,
        max_workers: int = DEFAULT_MAX_WORKERS,
        hint_depth: int = DEFAULT_HINT_DEPTH,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        if max_workers < 1:
            raise ValueError("PocketSphinx needs at least one worker process.")
        if hint_depth < 1:
            raise ValueError("The hint depth counts hypotheses: 1 or more.")
        if timeout <= 0:
            raise ValueError("The transcription timeout must be positive.")
        self._hint_depth = hint_depth
        self._timeout = timeout
        self._slots = asyncio.Semaphore(max_workers)
        self._idle: list[_Worker] = []
        self._busy: set[_Worker] = set()
        self._closed = False

    @property
    def label(self) -> str:
        return "pocketsphinx (offline, low accuracy)"

    @property
    def workers(self) -> int:
        """Worker processes running now, busy or idle."""
        return len(self._idle) + len(self._busy)

    async def transcribe(
        self, audio: PcmAudio, *, language: str, hints: tuple[str, ...] = ()
    ) -> Transcript:
        """The words heard, lower case; empty for silence. Confidence is not
        reported: PocketSphinx's posterior is not calibrated enough to act on."""
        _require_english(language)
        self._check_open()
        if len(audio.pcm) < 2:
            return Transcript("")
        request = {
            "sample_rate": audio.sample_rate,
            "hints": list(hints),
            "hint_depth": self._hint_depth,
        }
        try:
            async with asyncio.timeout(self._timeout):
                text = await self._with_worker(request, audio.pcm)
        except TimeoutError as err:
            raise SpeechProviderError(
                f"The offline speech recogniser did not finish within {self._timeout:g} s."
            ) from err
        return Transcript(text)

    async def warm_up(self) -> None:
        """Start one worker and build its decoder now, so the first caller does not wait."""
        self._check_open()
        if self._idle:
            return
        async with self._slots:
            worker = await _Worker.start()
            if self._closed:
                await worker.stop()
            else:
                self._idle.append(worker)

    async def aclose(self) -> None:
        """Stop every worker; safe to call more than once.

        Busy workers are killed, and the transcriptions they were working on
        fail with `SpeechProviderError`; their callers reap them.
        """
        self._closed = True
        idle, self._idle = self._idle, []
        for worker in self._busy:
            worker.kill()
        await asyncio.gather(*(worker.stop() for worker in idle))

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("PocketSphinxSpeechToText used after aclose()")

    async def _with_worker(self, request: dict[str, Any], pcm: bytes) -> str:
        async with self._slots:
            worker = self._idle.pop() if self._idle else await _Worker.start()
            self._busy.add(worker)
            reusable = False
            try:
                text, error = await worker.decode(request, pcm)
                reusable = True
            finally:
                self._busy.discard(worker)
                if reusable and not self._closed:
                    self._idle.append(worker)
                else:
                    # Cancelled, timed out or broken mid-utterance (its state is
                    # unknown, and the caller is not waiting), or the provider is closing.
                    await worker.stop(kill=not reusable)
        if error is not None:
            raise SpeechProviderError(f"The offline speech recogniser failed: {error}")
        return text


class _Worker:
    """One decoder in its own process, and the pipes to talk to it."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self._process = process

    @classmethod
    async def start(cls) -> _Worker:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            path for path in (_PACKAGE_ROOT, env.get("PYTHONPATH")) if path
        )
        try:
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                _WORKER_MODULE,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                env=env,
            )
        except OSError as err:
            raise SpeechUnavailable(
                f"The offline speech recogniser could not start a worker: {err}"
            ) from err
        worker = cls(process)
        try:
            assert process.stdout is not None
            async with asyncio.timeout(WORKER_START_TIMEOUT):
                line = await process.stdout.readline()
            ready = json.loads(line or b"{}")
            if not isinstance(ready, dict) or ready.get("ready") is not True:
                raise ValueError("no ready line")
        except (TimeoutError, ValueError) as err:
            await worker.stop()
            raise SpeechUnavailable(
                "The offline speech recogniser's worker did not start (exit status "
                f"{worker._process.returncode}); its error is in the log above. Is the "
                "pocketsphinx package installed?"
            ) from err
        except BaseException:
            await worker.stop()
            raise
        return worker

    async def decode(self, request: dict[str, Any], pcm: bytes) -> tuple[str, str | None]:
        """(text, None), or ("", the worker's error message) if decoding failed in it."""
        stdin, stdout = self._process.stdin, self._process.stdout
        assert stdin is not None and stdout is not None
        header = json.dumps({**request, "bytes": len(pcm)}).encode() + b"\n"
        try:
            stdin.write(header + pcm)
            await stdin.drain()
            line = await stdout.readline()
            answer = json.loads(line) if line else None
        except (ConnectionError, ValueError) as err:
            answer = None
            cause: BaseException | None = err
        else:
            cause = None
        if not isinstance(answer, dict):
            raise SpeechProviderError(
                "The offline speech recogniser's worker died in the middle of an utterance "
                f"(exit status {self._process.returncode}); the next one starts afresh."
            ) from cause
        if "error" in answer:
            return "", str(answer["error"])
        return str(answer.get("text", "")), None

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            self._process.kill()

    async def stop(self, *, kill: bool = False) -> None:
        """Close its stdin (it exits by itself when idle), kill it if it does not
        (or at once with `kill`), and reap it."""
        process = self._process
        if process.stdin is not None:
            process.stdin.close()
        if kill:
            self.kill()
        if process.returncode is None:
            try:
                async with asyncio.timeout(2.0):
                    await process.wait()
            except TimeoutError:
                self.kill()
        # Drains stdout so the transport closes now rather than at garbage collection.
        await process.communicate()


def _require_english(language: str) -> None:
    primary = language.strip().replace("_", "-").split("-", 1)[0].lower()
    if primary not in ("", "en"):
        raise SpeechUnavailable(
            f"The offline speech recogniser (PocketSphinx) only understands English, "
            f"not {language!r}: configure an OpenAI-compatible speech-to-text server "
            "for other languages."
        )


# Everything below runs in the worker processes.


def _serve() -> None:
    """The worker's loop: build the decoder, then answer requests until stdin closes."""
    # Ctrl-C reaches the whole process group; the parent decides when workers stop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # Only protocol lines may reach the parent's pipe: anything else printed,
    # by Python or by the C library, goes to stderr (the service's log).
    with os.fdopen(os.dup(1), "wb") as replies:
        os.dup2(2, 1)
        sys.stdout = sys.stderr
        _answer_requests(sys.stdin.buffer, replies)


def _answer_requests(requests: BinaryIO, replies: BinaryIO) -> None:
    from pocketsphinx import Decoder

    # FATAL: at the default level it reports "no speech" as an error on stderr.
    decoder = Decoder(samprate=MODEL_SAMPLE_RATE, loglevel="FATAL")
    replies.write(b'{"ready": true}\n')
    replies.flush()
    while line := requests.readline():
        request = json.loads(line)
        pcm = requests.read(int(request["bytes"]))
        if len(pcm) < int(request["bytes"]):
            return
        try:
            answer = {
                "text": _decode(
                    decoder,
                    pcm,
                    int(request["sample_rate"]),
                    tuple(request["hints"]),
                    int(request["hint_depth"]),
                )
            }
        except Exception as err:  # reported to the caller; the worker carries on
            answer = {"error": f"{type(err).__name__}: {err}"}
        replies.write(json.dumps(answer).encode() + b"\n")
        replies.flush()


def _decode(
    decoder: Any, pcm: bytes, sample_rate: int, hints: tuple[str, ...], hint_depth: int
) -> str:
    samples = np.frombuffer(pcm, dtype="<i2", count=len(pcm) // 2)
    if samples.size == 0 or int(np.abs(samples.astype(np.int32)).max()) < _SILENCE_PEAK:
        return ""
    if sample_rate != MODEL_SAMPLE_RATE:
        resampled: np.ndarray[Any, np.dtype[np.int16]] = soxr.resample(
            samples, sample_rate, MODEL_SAMPLE_RATE
        )
        samples = resampled
    if samples.size == 0:
        return ""
    # Reset the feature extraction (cepstral mean, noise estimate), which would
    # otherwise carry over from the previous utterance, whoever said it.
    decoder.reinit_feat()
    decoder.start_utt()
    decoder.process_raw(samples.astype("<i2").tobytes(), full_utt=True)
    decoder.end_utt()
    best = decoder.hyp()
    text: str = best.hypstr if best is not None else ""
    wanted = [hint for hint in (_normalise(h) for h in hints) if hint]
    if not wanted or _mentions(text, wanted):
        return text
    for hypothesis in itertools.islice(decoder.nbest(), hint_depth):
        if hypothesis is not None and _mentions(hypothesis.hypstr, wanted):
            alternative: str = hypothesis.hypstr
            return alternative
    return text


def _normalise(text: str) -> str:
    """Lower case, words only: the form PocketSphinx writes its hypotheses in."""
    return " ".join(re.findall(r"[a-z0-9']+", text.lower()))


def _mentions(text: str, hints: list[str]) -> bool:
    return any(re.search(rf"(?<![\w']){re.escape(hint)}(?![\w'])", text) for hint in hints)


if __name__ == "__main__":
    _serve()
