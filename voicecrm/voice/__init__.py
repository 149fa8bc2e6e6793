"""The speaking call: a `Call` built from a carrier's audio line and speech providers.

Turn taking (voice activity, end of utterance, barge-in), speech-to-text and
text-to-speech, pacing and the per-turn latency record. Carrier adapters give
it an `AudioLine`; the scenario engine sees only the `Call` it implements.
"""
