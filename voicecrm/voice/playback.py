"""Speaking: synthesis runs ahead while frames go to the line at its pace.

A producer task turns sentences into 20 ms mu-law frames (text-to-speech,
resampling to 8 kHz, framing, encoding) up to a couple of seconds ahead; the
speaking coroutine hands them to the line, which paces them. So the next
sentence is synthesised while the current one plays, and the caller hears no
gap between sentences.

When the caller barges in, `interrupt` is called from the listener: the line
drops what it has queued, nothing more is sent, synthesis stops, and what the
caller heard is worked out from the frames that actually played.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import AsyncIterable, Callable
from dataclasses import dataclass

from voicecrm.audio.codec import pcm16_to_ulaw
from voicecrm.audio.frames import FRAME_SECONDS, PCM_FRAME_BYTES, SAMPLE_RATE, Framer
from voicecrm.audio.resample import StreamResampler
from voicecrm.calls.interface import Spoken
from voicecrm.voice.line import AudioLine
from voicecrm.voice.ports import TextToSpeech
from voicecrm.voice.settings import VoiceSettings


@dataclass(slots=True)
class _Sentence:
    text: str
    frames: int = 0  # frames synthesised so far
    sent: int = 0  # frames handed to the line
    done: bool = False  # synthesis finished


@dataclass(frozen=True, slots=True)
class _Failed:
    error: BaseException


_END = object()


class Playback:
    def __init__(
        self,
        line: AudioLine,
        tts: TextToSpeech,
        settings: VoiceSettings,
        *,
        voice: str | None,
        language: str,
        clock: Callable[[], float],
        on_first_audio: Callable[[float, float], None],
        on_first_frame: Callable[[float], None],
    ) -> None:
        self._line = line
        self._tts = tts
        self._settings = settings
        self._voice = voice
        self._language = language
        self._clock = clock
        self._on_first_audio = on_first_audio
        self._on_first_frame = on_first_frame
        lead = max(1, math.ceil(settings.synthesis_lead_seconds / FRAME_SECONDS))
        self._queue: asyncio.Queue[object] = asyncio.Queue(maxsize=lead)
        self._sentences: list[_Sentence] = []
        self._sent = 0
        self.interrupted = False
        self._heard_frames: int | None = None

    def interrupt(self) -> None:
        """Stop now; called by the listener before it clears the line."""
        if self.interrupted:
            return
        self.interrupted = True
        self._heard_frames = self._sent - self._line.unplayed_frames()
        with contextlib.suppress(asyncio.QueueFull):
            self._queue.put_nowait(_END)  # wakes the speaker if it waits for synthesis

    async def run(self, texts: AsyncIterable[str]) -> Spoken:
        producer = asyncio.create_task(self._produce(texts), name="voice-synthesis")
        try:
            while not self.interrupted:
                item = await self._queue.get()
                if item is _END or self.interrupted:
                    break
                if isinstance(item, _Failed):
                    raise item.error
                assert isinstance(item, tuple)
                sentence, frame = item
                await self._line.send(frame)
                if self.interrupted:
                    break
                sentence.sent += 1
                self._sent += 1
                if self._sent == 1:
                    self._on_first_frame(self._clock())
            if not self.interrupted:
                await self._line.drain()  # "said" means heard: a hang-up must not cut it
        finally:
            producer.cancel()
            await asyncio.gather(producer, return_exceptions=True)
        return self._spoken()

    async def _produce(self, texts: AsyncIterable[str]) -> None:
        try:
            async for text in texts:
                if self.interrupted:
                    break
                if text.strip():
                    await self._synthesize(text.strip())
            await self._queue.put(_END)
        except asyncio.CancelledError:
            raise
        except Exception as err:  # handed to the speaker, who raises it in the call's task
            await self._queue.put(_Failed(err))

    async def _synthesize(self, text: str) -> None:
        sentence = _Sentence(text)
        self._sentences.append(sentence)
        framer = Framer(PCM_FRAME_BYTES)
        resampler: StreamResampler | None = None
        asked = self._clock()
        stream = self._tts.synthesize(text, voice=self._voice, language=self._language)
        async with contextlib.aclosing(stream):
            async for chunk in stream:
                if resampler is None:
                    self._on_first_audio(self._clock(), self._clock() - asked)
                    resampler = StreamResampler(chunk.sample_rate, SAMPLE_RATE)
                await self._put(sentence, framer.push(resampler.process(chunk.pcm)))
                # A provider with audio ready never makes this wait: let the speaker send
                # what is queued (the first frame above all) before converting more.
                await asyncio.sleep(0)
        if resampler is not None:
            tail = framer.push(resampler.flush())
            last = framer.flush(0)
            await self._put(sentence, [*tail, *([last] if last else [])])
        sentence.done = True

    async def _put(self, sentence: _Sentence, frames: list[bytes]) -> None:
        for frame in frames:
            sentence.frames += 1
            await self._queue.put((sentence, pcm16_to_ulaw(frame)))

    def _spoken(self) -> Spoken:
        if not self.interrupted:
            return Spoken(heard=" ".join(s.text for s in self._sentences if s.sent))
        heard_frames = self._heard_frames or 0
        parts: list[str] = []
        for sentence in self._sentences:
            if heard_frames <= 0:
                break
            if sentence.done and heard_frames >= sentence.frames:
                parts.append(sentence.text)
                heard_frames -= sentence.frames
                continue
            words = sentence.text.split()
            if sentence.done and sentence.frames:
                share = heard_frames / sentence.frames
            else:
                share = heard_frames * FRAME_SECONDS * self._settings.words_per_second / len(words)
            count = min(len(words), int(len(words) * share))
            if count:
                parts.append(" ".join(words[:count]) + "—")
            break
        return Spoken(heard=" ".join(parts), interrupted=True)
