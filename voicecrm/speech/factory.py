"""Builds the speech providers from plain configuration values.

The composition root reads the settings and calls these; the package itself
reads no environment. One word picks the family for each direction:

- "openai": an OpenAI-compatible server (OpenAI itself with a key alone, any
  compatible server with a base URL, which must include `/v1`);
- "offline": PocketSphinx and espeak-ng, nothing to configure, English
  recognition only and a robotic voice;
- "auto": "openai" when a base URL or a key is given, else "offline", so that a
  fresh install speaks at once and a configured one sounds good.

Model and voice settings name OpenAI models and voices, so "auto" ignores them
when it falls back offline; an explicit "offline" takes `voice` as an espeak-ng
voice ("en-gb", "en-us+f3") and has no model to choose.
"""

from __future__ import annotations

from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from voicecrm.errors import ConfigurationError
from voicecrm.integrations.openai_defaults import (
    DEFAULT_SPEECH_MODEL,
    DEFAULT_TRANSCRIPTION_MODEL,
    DEFAULT_VOICE,
    OPENAI_BASE_URL,
)
from voicecrm.speech.cache import DEFAULT_CACHE_BYTES, CachingTextToSpeech
from voicecrm.speech.espeak_tts import EspeakTextToSpeech
from voicecrm.speech.pocketsphinx_stt import PocketSphinxSpeechToText

if TYPE_CHECKING:
    from voicecrm.speech.openai_speech import OpenAISpeechToText

PROVIDERS = ("auto", "openai", "offline")


def speech_to_text(
    provider: str,
    *,
    base_url: str | None,
    api_key: str | None,
    model: str | None = None,
) -> OpenAISpeechToText | PocketSphinxSpeechToText:
    """The recogniser `provider` names. The caller owns it and must `aclose()` it."""
    choice, base_url, api_key = _resolve(provider, base_url, api_key, "speech-to-text")
    if choice == "offline":
        return PocketSphinxSpeechToText()
    # Imported only when chosen: it imports `openai`, most of a second (openai_defaults).
    from voicecrm.speech.openai_speech import OpenAISpeechToText

    return OpenAISpeechToText(
        base_url=base_url or OPENAI_BASE_URL,
        api_key=api_key,
        model=_clean(model) or DEFAULT_TRANSCRIPTION_MODEL,
    )


def text_to_speech(
    provider: str,
    *,
    base_url: str | None,
    api_key: str | None,
    model: str | None = None,
    voice: str | None = None,
    cache_bytes: int = DEFAULT_CACHE_BYTES,
) -> CachingTextToSpeech:
    """The voice `provider` names, behind a prompt cache of `cache_bytes`.

    The caller owns the result and must `aclose()` it (which closes the provider).
    """
    choice, base_url, api_key = _resolve(provider, base_url, api_key, "text-to-speech")
    if cache_bytes < 0:
        raise ConfigurationError(
            f"The speech cache size must be zero or more bytes, not {cache_bytes}."
        )
    if choice == "offline":
        offline_voice = _clean(voice) if _clean(provider).lower() == "offline" else None
        return CachingTextToSpeech(EspeakTextToSpeech(voice=offline_voice), max_bytes=cache_bytes)
    from voicecrm.speech.openai_speech import OpenAITextToSpeech

    inner = OpenAITextToSpeech(
        base_url=base_url or OPENAI_BASE_URL,
        api_key=api_key,
        model=_clean(model) or DEFAULT_SPEECH_MODEL,
        voice=_clean(voice) or DEFAULT_VOICE,
    )
    return CachingTextToSpeech(inner, max_bytes=cache_bytes)


def _resolve(
    provider: str, base_url: str | None, api_key: str | None, direction: str
) -> tuple[str, str | None, str | None]:
    """The family to build ("openai" or "offline") and the cleaned URL and key."""
    choice = _clean(provider).lower()
    base_url = _clean(base_url) or None
    api_key = _clean(api_key) or None
    if choice not in PROVIDERS:
        raise ConfigurationError(
            f"Unknown {direction} provider {provider!r}: use one of {', '.join(PROVIDERS)}."
        )
    if base_url is not None:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigurationError(
                f"The {direction} base URL {base_url!r} is not an http(s) URL "
                "(for example http://localhost:8000/v1)."
            )
    if choice == "auto":
        choice = "openai" if base_url or api_key else "offline"
    elif choice == "openai" and not (base_url or api_key):
        raise ConfigurationError(
            f"The openai {direction} provider needs an API key (for OpenAI itself) or the "
            "base URL of a compatible server."
        )
    return choice, base_url, api_key


def _clean(value: str | None) -> str:
    return (value or "").strip()
