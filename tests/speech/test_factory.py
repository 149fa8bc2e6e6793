"""Choosing the speech providers from plain settings.

"auto" must give a fresh install a working offline voice and ear, and switch to
the speech server as soon as one is configured; a typo in a setting must stop
the service with a message that says what to write instead.
"""

from __future__ import annotations

import pytest

from tests.speech import collect, joined, require_espeak
from voicecrm.errors import ConfigurationError
from voicecrm.speech.cache import DEFAULT_CACHE_BYTES, CachingTextToSpeech
from voicecrm.speech.espeak_tts import EspeakTextToSpeech
from voicecrm.speech.factory import speech_to_text, text_to_speech
from voicecrm.speech.openai_speech import OpenAISpeechToText, OpenAITextToSpeech
from voicecrm.speech.pocketsphinx_stt import PocketSphinxSpeechToText
from voicecrm.voice.ports import SpeechToText, TextToSpeech

API_KEY = "sk-test-factory-SECRET"


async def test_every_provider_fits_the_voice_ports() -> None:
    """Checked by mypy as much as at run time: the pipeline takes any of them."""
    ears: list[SpeechToText] = [PocketSphinxSpeechToText()]
    voices: list[TextToSpeech] = [EspeakTextToSpeech(), CachingTextToSpeech(EspeakTextToSpeech())]
    async with (
        OpenAISpeechToText(api_key=API_KEY) as openai_stt,
        OpenAITextToSpeech(api_key=API_KEY) as openai_tts,
    ):
        ears.append(openai_stt)
        voices.append(openai_tts)
        assert all(ear.label for ear in ears) and all(voice.label for voice in voices)


async def test_with_nothing_configured_auto_is_offline() -> None:
    stt = speech_to_text("auto", base_url=None, api_key=None, model="whisper-1")
    tts = text_to_speech("auto", base_url=" ", api_key="", model="tts-1", voice="alloy")
    try:
        assert isinstance(stt, PocketSphinxSpeechToText)
        assert isinstance(tts, CachingTextToSpeech)
        assert isinstance(tts.inner, EspeakTextToSpeech)
        assert tts.max_bytes == DEFAULT_CACHE_BYTES
        assert stt.workers == 0  # nothing starts before the first utterance
    finally:
        await stt.aclose()
        await tts.aclose()


async def test_a_key_alone_means_openai_itself_with_the_default_models() -> None:
    stt = speech_to_text("auto", base_url=None, api_key=API_KEY)
    tts = text_to_speech("AUTO", base_url=None, api_key=API_KEY)
    try:
        assert isinstance(stt, OpenAISpeechToText)
        assert stt.label == "openai gpt-4o-mini-transcribe"
        assert str(stt.client.base_url).rstrip("/") == "https://api.openai.com/v1"
        assert stt.client.api_key == API_KEY
        inner = tts.inner
        assert isinstance(inner, OpenAITextToSpeech)
        assert tts.label == "openai gpt-4o-mini-tts"
        assert inner.voice == "alloy"
    finally:
        await stt.aclose()
        await tts.aclose()


async def test_a_base_url_alone_means_a_keyless_compatible_server() -> None:
    url = "http://speaches.local:8000/v1"
    stt = speech_to_text("openai", base_url=url, api_key=None, model=" Systran/faster-whisper ")
    tts = text_to_speech(
        "openai", base_url=url, api_key=None, model="kokoro", voice="af_sky", cache_bytes=1024
    )
    try:
        assert isinstance(stt, OpenAISpeechToText)
        assert stt.label == f"openai Systran/faster-whisper at {url}"
        inner = tts.inner
        assert isinstance(inner, OpenAITextToSpeech)
        assert (inner.model, inner.voice) == ("kokoro", "af_sky")
        assert tts.max_bytes == 1024
    finally:
        await stt.aclose()
        await tts.aclose()


async def test_offline_ignores_the_server_and_takes_the_voice_as_espeaks() -> None:
    require_espeak()
    stt = speech_to_text("offline", base_url="http://localhost:8000/v1", api_key=API_KEY)
    tts = text_to_speech("Offline", base_url=None, api_key=API_KEY, voice="en-gb")
    try:
        assert isinstance(stt, PocketSphinxSpeechToText)
        assert isinstance(tts.inner, EspeakTextToSpeech)
        spoken = await collect(tts.synthesize("tomato", voice=None, language="en-US"))
        british = await collect(
            EspeakTextToSpeech().synthesize("tomato", voice=None, language="en-GB")
        )
        assert joined(spoken) == joined(british)
    finally:
        await stt.aclose()
        await tts.aclose()


def test_openai_without_a_key_or_a_url_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match=r"needs an API key .* or the base URL"):
        speech_to_text("openai", base_url=None, api_key=" ")
    with pytest.raises(ConfigurationError, match="needs an API key"):
        text_to_speech("openai", base_url="", api_key=None)


@pytest.mark.parametrize("provider", ["whisper", "", "open-ai"])
def test_an_unknown_provider_is_a_configuration_error_listing_the_choices(provider: str) -> None:
    with pytest.raises(ConfigurationError, match="use one of auto, openai, offline"):
        speech_to_text(provider, base_url=None, api_key=None)
    with pytest.raises(ConfigurationError, match="Unknown text-to-speech provider"):
        text_to_speech(provider, base_url=None, api_key=None)


@pytest.mark.parametrize("url", ["localhost:8000/v1", "ftp://example.com/v1", "http://"])
def test_a_base_url_that_is_not_http_is_a_configuration_error(url: str) -> None:
    with pytest.raises(ConfigurationError, match="is not an http"):
        speech_to_text("auto", base_url=url, api_key=None)
    with pytest.raises(ConfigurationError, match="is not an http"):
        text_to_speech("openai", base_url=url, api_key=API_KEY)


def test_a_negative_cache_size_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="cache size"):
        text_to_speech("offline", base_url=None, api_key=None, cache_bytes=-1)
