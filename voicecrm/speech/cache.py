"""Repeated prompts from memory: greetings and menus are said on every call.

Synthesising "Thanks for calling Acme, how can I help?" for the thousandth time
costs money (OpenAI bills per character), adds a network round trip of silence
before the caller hears anything, and fails whenever the speech server does.
`CachingTextToSpeech` wraps any `TextToSpeech` and replays what it has already
said, as long as the same provider, voice, language and text are asked for.

Only complete syntheses are kept: one cut short by a barge-in, or broken by a
provider error, would otherwise be replayed truncated to every later caller.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import AsyncGenerator
from contextlib import aclosing

from voicecrm.voice.ports import PcmAudio, TextToSpeech

DEFAULT_CACHE_BYTES = 32 * 1024 * 1024

_Key = tuple[str, str | None, str, str]


class CachingTextToSpeech:
    """A `TextToSpeech` that remembers up to `max_bytes` of audio, least recently used out.

    The first request for a text streams from the wrapped provider, each chunk
    handed on as it arrives; the audio is kept once the stream has ended
    normally. Two calls asking for the same new text at the same moment both
    synthesise it: waiting for the other's stream would tie one call's
    playback to a stranger's barge-in.

    The cache owns the provider it wraps: `aclose()` closes it too.
    """

    def __init__(self, inner: TextToSpeech, *, max_bytes: int = DEFAULT_CACHE_BYTES) -> None:
        if max_bytes < 0:
            raise ValueError("The speech cache size cannot be negative.")
        self._inner = inner
        self._max_bytes = max_bytes
        self._entries: OrderedDict[_Key, tuple[PcmAudio, ...]] = OrderedDict()
        self._sizes: dict[_Key, int] = {}
        self._bytes = 0
        self.hits = 0
        self.misses = 0

    @property
    def label(self) -> str:
        """The wrapped provider's label: logs should name who actually speaks."""
        return self._inner.label

    @property
    def inner(self) -> TextToSpeech:
        return self._inner

    @property
    def max_bytes(self) -> int:
        return self._max_bytes

    @property
    def cached_bytes(self) -> int:
        """PCM bytes held now; never more than `max_bytes`."""
        return self._bytes

    def __len__(self) -> int:
        return len(self._entries)

    def clear(self) -> None:
        self._entries.clear()
        self._sizes.clear()
        self._bytes = 0

    async def aclose(self) -> None:
        """Drop the cache and close the wrapped provider if it has anything to close."""
        self.clear()
        close = getattr(self._inner, "aclose", None)
        if close is not None:
            await close()

    async def synthesize(
        self, text: str, *, voice: str | None, language: str
    ) -> AsyncGenerator[PcmAudio, None]:
        key: _Key = (self._inner.label, voice, language, text)
        cached = self._entries.get(key)
        if cached is not None:
            self._entries.move_to_end(key)
            self.hits += 1
            for chunk in cached:
                yield chunk
            return
        self.misses += 1
        chunks: list[PcmAudio] = []
        size = 0
        keep = True
        async with aclosing(self._inner.synthesize(text, voice=voice, language=language)) as stream:
            async for chunk in stream:
                if keep:
                    size += len(chunk.pcm)
                    if size <= self._max_bytes:
                        chunks.append(chunk)
                    else:
                        # Too big to ever fit: stop holding on to it now.
                        keep = False
                        chunks.clear()
                yield chunk
        if keep:
            self._store(key, tuple(chunks), size)

    def _store(self, key: _Key, chunks: tuple[PcmAudio, ...], size: int) -> None:
        if key in self._entries:
            self._bytes -= self._sizes[key]
        self._entries[key] = chunks
        self._entries.move_to_end(key)
        self._sizes[key] = size
        self._bytes += size
        while self._bytes > self._max_bytes:
            oldest, _ = self._entries.popitem(last=False)
            self._bytes -= self._sizes.pop(oldest)
