"""Twilio: voice webhooks (signature-checked), TwiML, and bidirectional Media Streams.

The Media Stream WebSocket becomes an `AudioLine`, so a Twilio call runs the
same audio pipeline and scenarios as every other carrier.
"""
