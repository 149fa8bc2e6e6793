"""The agent tests run the real openai client against the local fake server."""

from tests.fakes.openai_server import openai_server

__all__ = ["openai_server"]
