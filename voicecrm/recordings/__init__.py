"""Recordings the service makes itself (voicemail on audio calls), kept as WAV files."""
