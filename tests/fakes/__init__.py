"""Local stand-ins for the outside services voicecrm talks to, served on loopback.

Each fake speaks the real wire format, is scripted by the test that uses it, and
records what it received, so tests run the real clients against it and nothing
reaches the internet.
"""
