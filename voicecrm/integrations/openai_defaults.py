"""What the OpenAI-compatible adapters default to, kept apart from the adapters.

The factories fill in unset settings from these without importing the adapters,
which import the `openai` package: most of a second (0.65-0.86 s here), paid by
every `voicecrm simulate` and by a service start, even with no provider
configured, which then never uses it.
"""

from __future__ import annotations

OPENAI_BASE_URL = "https://api.openai.com/v1"
DEFAULT_MAX_RETRIES = 0
DEFAULT_CONNECT_TIMEOUT = 3.0
# The language model's wait for its first token.
DEFAULT_FIRST_TOKEN_TIMEOUT = 5.0
DEFAULT_TRANSCRIPTION_MODEL = "gpt-4o-mini-transcribe"
DEFAULT_SPEECH_MODEL = "gpt-4o-mini-tts"
DEFAULT_VOICE = "alloy"
