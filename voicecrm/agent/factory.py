"""Builds the language model from plain configuration values.

The composition root reads the settings and calls this; the package itself reads
no environment. No base URL and no key means no model: the caller then explains
that agent steps need one (`LanguageModelUnavailable`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from voicecrm.errors import ConfigurationError
from voicecrm.integrations.openai_defaults import (
    DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_FIRST_TOKEN_TIMEOUT,
    DEFAULT_MAX_RETRIES,
    OPENAI_BASE_URL,
)

if TYPE_CHECKING:
    from voicecrm.agent.openai_llm import OpenAILanguageModel


def language_model_from_settings(
    base_url: str | None,
    api_key: str | None,
    *,
    max_retries: int = DEFAULT_MAX_RETRIES,
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
    first_token_timeout: float = DEFAULT_FIRST_TOKEN_TIMEOUT,
) -> OpenAILanguageModel | None:
    """The configured model, or None when neither a base URL nor a key is set.

    A key alone means OpenAI itself; a base URL alone means a server that needs no
    key (Ollama, a local vLLM). The base URL must include the API prefix, usually
    `/v1`. The caller owns the returned model and must `aclose()` it.
    """
    base_url = (base_url or "").strip() or None
    api_key = (api_key or "").strip() or None
    if base_url is None and api_key is None:
        return None
    if base_url is not None:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigurationError(
                f"The language model base URL {base_url!r} is not an http(s) URL "
                "(for example http://localhost:11434/v1)."
            )
    if max_retries < 0 or connect_timeout <= 0 or first_token_timeout <= 0:
        raise ConfigurationError(
            "Language model retries must be zero or more and its timeouts positive."
        )
    # Imported only now: the adapter imports `openai`, most of a second, which a
    # service or command without a model configured never needs (openai_defaults).
    from voicecrm.agent.openai_llm import OpenAILanguageModel

    return OpenAILanguageModel(
        base_url=base_url or OPENAI_BASE_URL,
        api_key=api_key,
        max_retries=max_retries,
        connect_timeout=connect_timeout,
        first_token_timeout=first_token_timeout,
    )
