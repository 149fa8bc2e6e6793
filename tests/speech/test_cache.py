"""The prompt cache: a greeting said once is replayed from memory, and only if it was whole.

A scripted voice stands in for the provider where the test needs to control
when chunks arrive, fail or are cut; the real offline voice shows the point of it
(the second greeting starts no espeak-ng at all).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from contextlib import aclosing

import pytest

from tests.speech import collect, joined, require_espeak
from voicecrm.speech.cache import CachingTextToSpeech
from voicecrm.speech.espeak_tts import EspeakTextToSpeech
from voicecrm.voice.ports import PcmAudio, SpeechProviderError, TextToSpeech


class ScriptedVoice:
    """Says each text as `chunks` pieces of `chunk_bytes` bytes; records every request.

    `gate`, when set, holds every chunk after the first until the test opens it;
    `fail_after` raises after that many chunks.
    """

    def __init__(self, *, chunks: int = 3, chunk_bytes: int = 100, label: str = "scripted") -> None:
        self.chunks = chunks
        self.chunk_bytes = chunk_bytes
        self.name = label
        self.requests: list[tuple[str, str | None, str]] = []
        self.finished = 0
        self.closed_early = 0
        self.gate: asyncio.Event | None = None
        self.fail_after: int | None = None
        self.aclosed = False

    @property
    def label(self) -> str:
        return self.name

    async def synthesize(
        self, text: str, *, voice: str | None, language: str
    ) -> AsyncGenerator[PcmAudio, None]:
        self.requests.append((text, voice, language))
        completed = False
        try:
            for index in range(self.chunks):
                if self.fail_after == index:
                    raise SpeechProviderError("scripted failure")
                if index and self.gate is not None:
                    await self.gate.wait()
                yield PcmAudio(bytes([index]) * self.chunk_bytes, 8000)
            completed = True
            self.finished += 1
        finally:
            if not completed:
                self.closed_early += 1

    async def aclose(self) -> None:
        self.aclosed = True


async def say(tts: TextToSpeech, text: str, voice: str | None = None) -> list[PcmAudio]:
    return await collect(tts.synthesize(text, voice=voice, language="en-US"))


async def test_a_completed_synthesis_is_replayed_without_asking_the_provider() -> None:
    voice = ScriptedVoice()
    cache = CachingTextToSpeech(voice)

    first = await say(cache, "Thanks for calling Acme.")
    second = await say(cache, "Thanks for calling Acme.")

    assert second == first
    assert len(voice.requests) == 1
    assert (cache.hits, cache.misses) == (1, 1)
    assert cache.cached_bytes == 300


class CountingVoice:
    """A real voice, and how many syntheses it was asked for."""

    def __init__(self, inner: TextToSpeech) -> None:
        self.inner = inner
        self.asked = 0

    @property
    def label(self) -> str:
        return self.inner.label

    def synthesize(
        self, text: str, *, voice: str | None, language: str
    ) -> AsyncGenerator[PcmAudio, None]:
        self.asked += 1
        return self.inner.synthesize(text, voice=voice, language=language)


async def test_the_second_greeting_starts_no_espeak_at_all() -> None:
    require_espeak()
    espeak = CountingVoice(EspeakTextToSpeech())
    cache = CachingTextToSpeech(espeak)
    greeting = "Thank you for calling. Press one for sales."

    spoken = joined(await say(cache, greeting))
    replayed = joined(await say(cache, greeting))

    assert replayed == spoken and replayed.sample_rate == 22050
    assert espeak.asked == 1
    assert (cache.hits, cache.misses) == (1, 1)


async def test_the_first_request_streams_chunks_as_they_arrive() -> None:
    voice = ScriptedVoice()
    voice.gate = asyncio.Event()
    cache = CachingTextToSpeech(voice)

    async with aclosing(cache.synthesize("Hello.", voice=None, language="en-US")) as stream:
        first = await anext(stream)  # the provider is holding back the rest
        assert voice.finished == 0
        voice.gate.set()
        rest = [chunk async for chunk in stream]

    assert [first, *rest] == await say(cache, "Hello.")
    assert (cache.hits, cache.misses) == (1, 1)


async def test_a_synthesis_closed_early_is_not_kept() -> None:
    """A barge-in: what was heard was cut short, and must not be replayed cut."""
    voice = ScriptedVoice()
    cache = CachingTextToSpeech(voice)

    async with aclosing(cache.synthesize("A long menu.", voice=None, language="en-US")) as stream:
        await anext(stream)

    assert voice.closed_early == 1  # the provider's stream was closed too
    assert len(cache) == 0 and cache.cached_bytes == 0
    assert len(await say(cache, "A long menu.")) == 3
    assert len(voice.requests) == 2
    assert (cache.hits, cache.misses) == (0, 2)


async def test_a_failed_synthesis_is_not_kept() -> None:
    voice = ScriptedVoice()
    voice.fail_after = 2
    cache = CachingTextToSpeech(voice)

    with pytest.raises(SpeechProviderError, match="scripted failure"):
        await say(cache, "Hello.")
    voice.fail_after = None
    assert len(await say(cache, "Hello.")) == 3

    assert len(voice.requests) == 2
    assert cache.misses == 2


async def test_the_least_recently_used_prompts_go_first_when_bytes_run_out() -> None:
    voice = ScriptedVoice(chunks=1, chunk_bytes=100)
    cache = CachingTextToSpeech(voice, max_bytes=300)
    for text in ("greeting", "menu", "hours"):
        await say(cache, text)
    await say(cache, "greeting")  # used again: now the most recent

    await say(cache, "goodbye")  # 400 bytes: the least recently used goes

    assert cache.cached_bytes == 300
    asked = len(voice.requests)
    for text in ("greeting", "hours", "goodbye"):
        await say(cache, text)
    assert len(voice.requests) == asked
    await say(cache, "menu")
    assert len(voice.requests) == asked + 1


async def test_a_synthesis_larger_than_the_whole_cache_is_not_kept() -> None:
    voice = ScriptedVoice(chunks=4, chunk_bytes=100)
    cache = CachingTextToSpeech(voice, max_bytes=250)
    await say(cache, "small")  # 400 bytes: too big
    assert len(cache) == 0

    voice.chunks = 2
    await say(cache, "smaller")
    assert cache.cached_bytes == 200


async def test_provider_voice_and_language_are_part_of_the_key() -> None:
    voice = ScriptedVoice()
    cache = CachingTextToSpeech(voice)

    await say(cache, "Hello.")
    await say(cache, "Hello.", voice="en-gb")
    await collect(cache.synthesize("Hello.", voice=None, language="fr-FR"))
    voice.name = "another provider"
    await say(cache, "Hello.")

    assert (cache.hits, cache.misses) == (0, 4)


async def test_the_cache_speaks_with_its_providers_label_and_closes_it() -> None:
    voice = ScriptedVoice(label="openai gpt-4o-mini-tts")
    cache = CachingTextToSpeech(voice)
    await say(cache, "Hello.")

    assert cache.label == "openai gpt-4o-mini-tts"
    await cache.aclose()
    assert voice.aclosed
    assert len(cache) == 0


async def test_a_provider_without_aclose_is_fine_to_close() -> None:
    cache = CachingTextToSpeech(EspeakTextToSpeech())
    await cache.aclose()


def test_a_negative_size_is_refused() -> None:
    with pytest.raises(ValueError):
        CachingTextToSpeech(ScriptedVoice(), max_bytes=-1)
