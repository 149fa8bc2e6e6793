"""Carriers: each turns its wire protocol into the channel-agnostic `Call`.

`twilio/` and `ari/` (coming with their issues) and `simulator/` (a call in
the terminal) never import each other.
"""
