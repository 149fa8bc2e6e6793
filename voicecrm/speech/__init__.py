"""Speech in and out for live calls: the implementations of `voicecrm.voice.ports`.

The voice pipeline only knows the small `SpeechToText` and `TextToSpeech`
protocols, so that it can be tested with instant fakes; the real providers and
their heavy dependencies (the openai client, a speech recogniser in worker
processes, an external synthesiser) live here, behind plain-value builders in
`voicecrm.speech.factory` that only the composition root calls.

Two families, because a receptionist must still answer when no speech server is
configured: any OpenAI-compatible server (`openai_speech`) for good quality, and
an offline fallback (`pocketsphinx_stt`, `espeak_tts`) that needs nothing but
local packages. `cache` keeps repeated prompts (greetings, menus) in memory, so
that they start playing at once and cost nothing the second time.

This package never imports the web, carrier or configuration layers: it turns
text into audio and back, and reports failures as `SpeechProviderError`.
"""
