"""What the scenario engine needs from the outside world, as small protocols.

The engine drives a `Call` (voicecrm.calls) and, through these ports, a
language model and outbound HTTP. Implementations live outside this package
(`voicecrm.agent` for the OpenAI-compatible client, `voicecrm.integrations`
for HTTP) so that the engine never imports openai or aiohttp, and tests can
plug in real local servers behind the same interfaces.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from voicecrm.errors import VoiceCRMError


class ProviderError(VoiceCRMError):
    """A provider (LLM, HTTP endpoint) failed or timed out; the call takes its error path."""

    title = "Provider failed"


class LanguageModelUnavailable(ProviderError):
    """No language model is configured: agent steps cannot run."""

    title = "No language model configured"


@dataclass(frozen=True, slots=True)
class ToolSpec:
    """A function the model may call; `parameters` is its arguments' JSON Schema."""

    name: str
    description: str
    parameters: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class ToolCall:
    id: str
    name: str
    arguments: str  # JSON text, exactly as the model produced it


@dataclass(frozen=True, slots=True)
class TextDelta:
    """A piece of the reply text, as soon as the model streams it."""

    text: str


@dataclass(frozen=True, slots=True)
class Completion:
    """The end of one model response: its full text and the tools it asked for."""

    text: str
    tool_calls: tuple[ToolCall, ...] = ()
    finish_reason: str | None = None
    usage: dict[str, int] = field(default_factory=dict)


ModelEvent = TextDelta | Completion


class LanguageModel(Protocol):
    def stream(
        self,
        *,
        messages: list[dict[str, Any]],
        tools: list[ToolSpec],
        model: str,
        temperature: float,
        timeout: float,
    ) -> AsyncGenerator[ModelEvent, None]:
        """Stream one response: `TextDelta`s, then exactly one `Completion` last.

        Raises `ProviderError` (from the underlying client's errors) on failure. A
        generator, so that a consumer who stops early (the caller barged in) can
        close it, and with it the HTTP response: consume it in `contextlib.aclosing`.
        """
        ...


@dataclass(frozen=True, slots=True)
class HttpResult:
    status: int
    body: Any  # parsed JSON, or text when the response was not JSON


class HttpClient(Protocol):
    async def request(
        self, method: str, url: str, *, headers: Mapping[str, str], json_body: Any
    ) -> HttpResult:
        """Raises `ProviderError` on connection failures. The caller bounds the time."""
        ...
