"""Audio as a WAV file: 16-bit mono PCM, the one form every party here reads.

Transcription servers take it, Asterisk plays it (its `wav` format), and the
recordings folder keeps voicemail in it.
"""

from __future__ import annotations

import io
import wave

from voicecrm.voice.ports import PcmAudio


def wav_bytes(audio: PcmAudio) -> bytes:
    """The audio as a complete WAV file (a trailing half sample is dropped)."""
    pcm = audio.pcm[: len(audio.pcm) - len(audio.pcm) % 2]
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as writer:
        writer.setnchannels(1)
        writer.setsampwidth(2)
        writer.setframerate(audio.sample_rate)
        writer.writeframes(pcm)
    return buffer.getvalue()
