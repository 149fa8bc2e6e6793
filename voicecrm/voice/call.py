"""`VoiceCall`: the `Call` interface over an audio line and speech providers.

One call, one owner: `async with VoiceCall(...)` starts the reader that
listens to the caller for the whole call and stops it on the way out. The
verbs speak through `Playback` and listen through the `Listener`'s inbox:

- whatever the caller says or keys while nobody asks (over a greeting, say)
  waits in the inbox and answers the next `gather`;
- speech or a key over the receptionist stops it within a frame or two;
- each finished utterance opens a latency record that the first frame of the
  answer closes.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterable, AsyncIterator, Callable, Sequence
from types import TracebackType

from voicecrm.audio.codec import pcm16_to_ulaw
from voicecrm.audio.frames import FRAME_MS, PCM_FRAME_BYTES, SAMPLE_RATE, frames_for
from voicecrm.audio.turns import SpeechDiscarded, SpeechEnded, SpeechStarted
from voicecrm.audio.vad import VoiceActivityDetector, WebRtcVad
from voicecrm.calls.interface import (
    VOICEMAIL_SILENCE_SECONDS,
    CallEnded,
    CallInfo,
    GatherResult,
    InputKind,
    Recording,
    Spoken,
    TransferOutcome,
    TransferStatus,
)
from voicecrm.calls.latency import TurnLatency
from voicecrm.cancellation import cancel_and_wait
from voicecrm.voice.line import AudioLine, CannotPlayUrls, Whisper
from voicecrm.voice.listener import Closed, DigitPressed, InboxItem, Listener, TimedOut
from voicecrm.voice.playback import Playback
from voicecrm.voice.ports import (
    CarrierRecorder,
    MediaFetcher,
    PcmAudio,
    RecordingSink,
    SpeechProviderError,
    SpeechToText,
    TextToSpeech,
)
from voicecrm.voice.recordings_played import decode_wav
from voicecrm.voice.settings import VoiceSettings

log = logging.getLogger(__name__)

TurnObserver = Callable[[TurnLatency], None]
_BEEP_FRAMES = 15  # 300 ms


async def _one(text: str) -> AsyncIterator[str]:
    yield text


class _Recording:
    """A decoded recording as a `TextToSpeech` that says only it, in chunks of a second, so
    that `Playback` sends it as it sends speech (paced, cut short by a barge-in)."""

    label = "recording"

    def __init__(self, audio: PcmAudio) -> None:
        self._audio = audio

    async def synthesize(
        self, text: str, *, voice: str | None, language: str
    ) -> AsyncGenerator[PcmAudio, None]:
        pcm, rate = self._audio.pcm, self._audio.sample_rate
        step = 2 * rate
        for start in range(0, len(pcm), step):
            yield PcmAudio(pcm[start : start + step], rate)


def _seconds(frames: int) -> float:
    return max(1, frames) * FRAME_MS / 1000


def _beep() -> list[bytes]:
    """A 300 ms 1 kHz tone at 8 kHz: the sine repeats every 8 samples."""
    cycle = (0, 5792, 8191, 5792, 0, -5792, -8191, -5792)
    pcm = b"".join(v.to_bytes(2, "little", signed=True) for v in cycle) * (
        PCM_FRAME_BYTES // 16 * _BEEP_FRAMES
    )
    return [
        pcm16_to_ulaw(pcm[i : i + PCM_FRAME_BYTES]) for i in range(0, len(pcm), PCM_FRAME_BYTES)
    ]


class VoiceCall:
    def __init__(
        self,
        line: AudioLine,
        *,
        stt: SpeechToText,
        tts: TextToSpeech,
        settings: VoiceSettings | None = None,
        vad: VoiceActivityDetector | None = None,
        voice: str | None = None,
        language: str = "en-US",
        clock: Callable[[], float] = time.perf_counter,
        on_turn: TurnObserver | None = None,
        recordings: RecordingSink | None = None,
        recorder: CarrierRecorder | None = None,
        media: MediaFetcher | None = None,
    ) -> None:
        self._line = line
        self._recordings = recordings
        self._media = media  # fetches what `play` plays on a line that cannot
        self._recorder = recorder
        self._stt = stt
        self._tts = tts
        self.settings = settings or VoiceSettings()
        self._voice = voice
        self._language = language
        self._clock = clock
        self._on_turn = on_turn
        self._transcribing: set[asyncio.Task[str | None]] = set()
        self._listener = Listener(
            line,
            vad or WebRtcVad(self.settings.vad_aggressiveness),
            self.settings.turns,
            on_speech=self._caller_spoke,
            clock=clock,
        )
        self._reader: asyncio.Task[None] | None = None
        self._playback: Playback | None = None
        self._turn: TurnLatency | None = None
        self._latencies: list[TurnLatency] = []
        self._ended: str | None = None

    # ------------------------------------------------------------- lifecycle
    async def __aenter__(self) -> VoiceCall:
        self._reader = asyncio.create_task(self._listener.run(), name="voice-listener")
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._reader is not None:
            await cancel_and_wait(self._reader)
            self._reader = None
        # Voicemail transcripts nobody waited for: the call is over, so is their use.
        unfinished = list(self._transcribing)
        for task in unfinished:
            task.cancel()
        await asyncio.gather(*unfinished, return_exceptions=True)

    @property
    def info(self) -> CallInfo:
        return self._line.info

    @property
    def stt_label(self) -> str:
        return self._stt.label

    @property
    def tts_label(self) -> str:
        return self._tts.label

    @property
    def latencies(self) -> Sequence[TurnLatency]:
        return self._latencies

    @property
    def frames_heard(self) -> int:
        """Caller frames read so far: the call's clock, in 20 ms steps."""
        return self._listener.frames

    def _check_open(self) -> None:
        if self._ended is not None:
            raise CallEnded(f"the call has ended ({self._ended})")
        if self._listener.closed is not None:
            self._ended = self._listener.closed
            raise CallEnded(f"the call has ended ({self._ended})")

    # ------------------------------------------------------------- barge-in
    async def _caller_spoke(self) -> None:
        playback = self._playback
        if playback is None or playback.interrupted or not self.settings.barge_in:
            return
        playback.interrupt()
        await self._line.clear()

    # ------------------------------------------------------------- latency
    def mark(self, event: str, *, waited: float = 0.0) -> None:
        turn = self._turn
        if turn is None or turn.first_frame is not None:
            return
        if event == "first_token" and turn.first_token is None:
            turn.first_token = self._clock()
        elif event == "llm":
            turn.llm_wait += waited

    def _first_audio(self, at: float, waited: float) -> None:
        turn = self._turn
        if turn is not None and turn.first_audio is None:
            turn.first_audio = at
            turn.tts_wait += waited

    def _first_frame(self, at: float) -> None:
        turn, self._turn = self._turn, None
        if turn is not None:
            turn.first_frame = at
            self._latencies.append(turn)
            if self._on_turn is not None:
                self._on_turn(turn)

    # ------------------------------------------------------------- speaking
    async def say(
        self, text: str, *, voice: str | None = None, language: str | None = None
    ) -> Spoken:
        return await self.speak(_one(text), voice=voice, language=language)

    async def speak(
        self,
        sentences: AsyncIterable[str],
        *,
        voice: str | None = None,
        language: str | None = None,
    ) -> Spoken:
        self._check_open()
        return await self._play_speech(self._tts, sentences, voice, language)

    async def _play_speech(
        self,
        tts: TextToSpeech,
        sentences: AsyncIterable[str],
        voice: str | None,
        language: str | None,
    ) -> Spoken:
        playback = Playback(
            self._line,
            tts,
            self.settings,
            voice=voice or self._voice,
            language=language or self._language,
            clock=self._clock,
            on_first_audio=self._first_audio,
            on_first_frame=self._first_frame,
        )
        self._playback = playback
        try:
            spoken = await playback.run(sentences)
        finally:
            self._playback = None
        self._check_open()
        return spoken

    async def play(self, url: str) -> None:
        """The carrier plays `url` itself; a line that cannot (a Twilio Media Stream) gets
        the file fetched, decoded and sent down it like speech, barge-in included."""
        self._check_open()
        try:
            await self._line.play(url)
        except CannotPlayUrls:
            if self._media is None:
                raise
            audio = decode_wav(await self._media.fetch(url), url)
            await self._play_speech(_Recording(audio), _one(url), None, None)

    # ------------------------------------------------------------- listening
    async def _next(self) -> InboxItem:
        item = await self._listener.inbox.get()
        if isinstance(item, Closed):
            self._listener.inbox.put_nowait(item)  # every later verb sees it too
            self._ended = item.reason
            raise CallEnded(f"the call has ended ({item.reason})")
        return item

    async def gather(
        self,
        *,
        prompt: str | None,
        inputs: frozenset[InputKind],
        input_timeout: float,
        num_digits: int | None = None,
        finish_on_key: str | None = None,
        language: str | None = None,
        hints: tuple[str, ...] = (),
    ) -> GatherResult:
        self._check_open()
        if prompt:
            await self.say(prompt, language=language)
        listener = self._listener
        token = listener.arm(input_timeout)
        digits = ""
        try:
            while True:
                item = await self._next()
                if isinstance(item, TimedOut):
                    if item.token == token:
                        return GatherResult(digits=digits)
                elif isinstance(item, DigitPressed):
                    if InputKind.DTMF not in inputs:
                        continue
                    if finish_on_key and item.digit == finish_on_key:
                        return GatherResult(digits=digits)
                    digits += item.digit
                    if num_digits and len(digits) >= num_digits:
                        return GatherResult(digits=digits)
                    token = listener.arm(self.settings.digit_timeout)
                elif digits or InputKind.SPEECH not in inputs:
                    continue  # speech while keying, or where only keys count
                elif isinstance(item, SpeechStarted):
                    listener.disarm()  # the caller is talking: wait for them to finish
                elif isinstance(item, SpeechDiscarded):
                    token = listener.arm(input_timeout)
                elif isinstance(item, SpeechEnded):
                    result = await self._transcribe(item, language, hints)
                    if not result.empty:
                        return result
                    token = listener.arm(input_timeout)
        finally:
            listener.disarm()

    async def _transcribe(
        self, utterance: SpeechEnded, language: str | None, hints: tuple[str, ...]
    ) -> GatherResult:
        ended = self._listener.speech_ended_at or self._clock()
        turn = TurnLatency(speech_end=ended)
        self._turn = turn
        asked = self._clock()
        transcript = await self._stt.transcribe(
            PcmAudio(utterance.pcm, SAMPLE_RATE),
            language=language or self._language,
            hints=hints,
        )
        turn.transcript_ready = self._clock()
        turn.stt_wait += turn.transcript_ready - asked
        return GatherResult(speech=transcript.text.strip(), confidence=transcript.confidence)

    async def record(
        self,
        *,
        max_seconds: float,
        beep: bool = True,
        finish_on_key: str | None = "#",
        silence_seconds: int = VOICEMAIL_SILENCE_SECONDS,
    ) -> Recording | None:
        """Voicemail: everything from the beep to `silence_seconds` of silence (shorter
        pauses are part of the message), the key, the caller hanging up, or `max_seconds`.

        A carrier that records itself (`recorder`) does it all on its side; the
        listener is muted meanwhile, so the caller's message neither barges in nor
        answers a later question."""
        self._check_open()
        if self._recorder is not None:
            return await self._carrier_record(max_seconds, beep, finish_on_key, silence_seconds)
        if beep:
            for frame in _beep():
                await self._line.send(frame)
        captured: list[bytes] = []
        listener = self._listener

        def capture(_ulaw: bytes, pcm: bytes) -> None:
            captured.append(pcm)

        listener.taps.append(capture)
        # The message ends at max_seconds of caller audio, or after a long silence:
        # a caller pausing to think (an utterance's end) has not finished.
        last_frame = listener.frames + frames_for(max_seconds * 1000)
        token = listener.arm(max_seconds)
        spoke = talking = False
        kept = 0  # frames captured up to the end of the latest utterance
        try:
            while True:
                item = await self._next()
                if isinstance(item, TimedOut) and item.token == token:
                    break
                if isinstance(item, DigitPressed) and item.digit == finish_on_key:
                    break
                if isinstance(item, SpeechStarted):
                    spoke = talking = True
                    token = listener.arm(_seconds(last_frame - listener.frames))
                if isinstance(item, SpeechEnded | SpeechDiscarded):
                    if isinstance(item, SpeechEnded):
                        kept = len(captured)
                    talking, spoke = False, kept > 0  # a cough alone is no message
                    # An utterance ends after end_silence_ms of it already: the silence
                    # counts from the last word, as on Asterisk.
                    quiet = silence_seconds - self.settings.turns.end_silence_ms / 1000
                    left = _seconds(last_frame - listener.frames)
                    token = listener.arm(min(max(quiet, FRAME_MS / 1000), left))
        except CallEnded:
            # Most callers hang up once they have said their piece: the message stands.
            if not spoke:
                raise
        finally:
            listener.taps.remove(capture)
            listener.disarm()
        if not spoke:
            return None
        # Ended in silence: the message without it (its last utterance keeps its tail).
        message = captured if talking or not kept else captured[:kept]
        audio = PcmAudio(b"".join(message), SAMPLE_RATE)
        url = f"voicecrm://recordings/{self.info.call_id}"  # not kept: no store configured
        if self._recordings is not None:
            url = await self._recordings.save(
                self.info.channel, self.info.call_id, audio.pcm, SAMPLE_RATE
            )
        return Recording(
            url=url,
            duration_seconds=round(audio.seconds, 1),
            pending_transcript=self._transcribe_later(audio),
        )

    async def _carrier_record(
        self, max_seconds: float, beep: bool, finish_on_key: str | None, silence_seconds: int
    ) -> Recording | None:
        assert self._recorder is not None
        with self._listener.muted():
            made = await self._recorder.record(
                max_seconds=max_seconds,
                beep=beep,
                finish_on_key=finish_on_key,
                silence_seconds=silence_seconds,
            )
        if made is None:
            return None
        return Recording(
            url=made.url,
            duration_seconds=round(made.seconds, 1),
            # None when the carrier's audio was not fetched: the message is kept all the same.
            pending_transcript=self._transcribe_later(made.audio)
            if made.audio is not None and made.audio.pcm
            else None,
        )

    def _transcribe_later(self, audio: PcmAudio) -> asyncio.Task[str | None]:
        """The message's words, worked out while the call goes on (`Recording`)."""
        task = asyncio.create_task(self._message_words(audio), name="voicemail-transcript")
        self._transcribing.add(task)
        task.add_done_callback(self._transcribing.discard)
        return task

    async def _message_words(self, audio: PcmAudio) -> str | None:
        """None when the speech provider failed: the message itself is kept either way."""
        try:
            transcript = await self._stt.transcribe(audio, language=self._language)
        except SpeechProviderError as error:
            log.warning("call %s: the voicemail was not transcribed: %s", self.info.call_id, error)
            return None
        return transcript.text.strip() or None

    async def echo(self, seconds: float) -> None:
        """The caller's own frames go straight back: a line and latency test."""
        self._check_open()
        echoed: asyncio.Queue[bytes] = asyncio.Queue()
        listener = self._listener

        def repeat(ulaw: bytes, _pcm: bytes) -> None:
            echoed.put_nowait(ulaw)

        listener.taps.append(repeat)
        token = listener.arm(seconds)
        try:
            while True:
                getter = asyncio.ensure_future(echoed.get())
                waiter = asyncio.ensure_future(self._next())
                done, _ = await asyncio.wait({getter, waiter}, return_when=asyncio.FIRST_COMPLETED)
                await cancel_and_wait(*(task for task in (getter, waiter) if task not in done))
                if getter in done:
                    await self._line.send(getter.result())
                if waiter in done:
                    item = waiter.result()  # raises CallEnded when the line closed
                    if isinstance(item, TimedOut) and item.token == token:
                        return
        finally:
            listener.taps.remove(repeat)
            listener.disarm()

    # ------------------------------------------------------------- the line
    async def transfer(
        self,
        target: str,
        *,
        whisper: str | None = None,
        ring_timeout: float = 30.0,
        caller_id: str | None = None,
    ) -> TransferOutcome:
        self._check_open()
        said = Whisper(whisper, lambda: self._synthesize(whisper)) if whisper else None
        outcome = await self._line.transfer(
            target, whisper=said, ring_timeout=ring_timeout, caller_id=caller_id
        )
        if outcome.status is TransferStatus.ANSWERED:
            self._ended = "transferred"
        return outcome

    async def _synthesize(self, text: str) -> PcmAudio:
        """`text` whole, in the call's voice and language (for a carrier to play)."""
        speech = self._tts.synthesize(text, voice=self._voice, language=self._language)
        chunks = [chunk async for chunk in speech]
        if not chunks:
            raise SpeechProviderError(f"{self._tts.label} gave no audio for {text!r}")
        return PcmAudio(b"".join(chunk.pcm for chunk in chunks), chunks[0].sample_rate)

    async def hangup(self, reason: str = "completed") -> None:
        if self._ended is None:
            self._ended = reason
        await self._line.hangup(reason)

    async def audio_in(self) -> AsyncIterator[bytes]:
        self._check_open()
        frames: asyncio.Queue[bytes | None] = asyncio.Queue()
        listener = self._listener

        def tap(ulaw: bytes, _pcm: bytes) -> None:
            frames.put_nowait(ulaw)

        listener.taps.append(tap)
        listener.on_close.append(lambda: frames.put_nowait(None))
        try:
            while (frame := await frames.get()) is not None:
                yield frame
        finally:
            listener.taps.remove(tap)

    async def send_audio(self, frame: bytes) -> None:
        self._check_open()
        await self._line.send(frame)

    async def clear_audio(self) -> None:
        await self._line.clear()
