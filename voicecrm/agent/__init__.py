"""Adapters for the ports that `voicecrm.scenarios` (and later `voicecrm.audio`) define.

This package implements the language-model port with the official `openai`
client against any OpenAI-compatible base URL: OpenAI itself, Ollama, vLLM,
LM Studio (the speech ports are in `voicecrm.speech`; both word the client's
errors with `voicecrm.integrations.openai_errors`). It reads no
configuration: `factory.language_model_from_settings` takes plain values from
the composition root.
"""
