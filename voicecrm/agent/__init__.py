"""Adapters for the ports that `voicecrm.scenarios` (and later `voicecrm.audio`) define.

This package implements the language-model port, and later the speech ports,
with the official `openai` client against any OpenAI-compatible base URL:
OpenAI itself, Ollama, vLLM, LM Studio. It is the only place that imports
`openai`, and where the client's errors become `ProviderError`. It reads no
configuration: `factory.language_model_from_settings` takes plain values from
the composition root.
"""
