"""Telephone audio: G.711 codecs, resampling, 20 ms framing, voice activity and turn taking.

Pure and fast: no I/O, no asyncio, no per-sample Python loops (the codecs,
resampler and VAD are C libraries), so one core carries hundreds of calls.
"""
