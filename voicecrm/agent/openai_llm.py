"""The `LanguageModel` port over any OpenAI-compatible Chat Completions endpoint.

One `stream()` call is one model turn on a live phone call: text is handed on
piece by piece so speech can start early, tool calls are reassembled from their
deltas, and the turn ends with exactly one `Completion`. Whatever goes wrong
(refused request, dropped connection, error event, truncated stream, a model too
slow to start or to finish) surfaces as a `ProviderError` whose message names the
server and model but never the API key, so the engine can take its error path.

Time on a call is counted in silence, so the adapter keeps two deadlines of its
own instead of trusting the client's per-read timeout (600 s by default):

- first token: from the request until the first chunk that carries text, a tool
  call or a finish reason (`first_token_timeout`, capped by `timeout`);
- whole response: `timeout` seconds of wall time from the request to the end of
  the stream, including the client's own retries and the time the consumer takes
  between events.

Each deadline bounds one await at a time (never a `yield`), so an expiry cancels
only the adapter's own wait, not whatever the consumer is doing.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncGenerator, Awaitable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, TypeVar, cast
from urllib.parse import urlsplit

import openai
from openai.types.chat import (
    ChatCompletionChunk,
    ChatCompletionFunctionToolParam,
    ChatCompletionMessageParam,
)

from voicecrm.integrations.openai_defaults import (
    DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_FIRST_TOKEN_TIMEOUT,
    DEFAULT_MAX_RETRIES,
    OPENAI_BASE_URL,
)
from voicecrm.integrations.openai_errors import KEYLESS_PLACEHOLDER, OpenAIErrorText
from voicecrm.scenarios.ports import (
    Completion,
    ModelEvent,
    ProviderError,
    TextDelta,
    ToolCall,
    ToolSpec,
)

# Sent to servers that need no key (Ollama, vLLM without --api-key): the client
# requires one and would otherwise read OPENAI_API_KEY from the environment.

_T = TypeVar("_T")


class OpenAILanguageModel:
    """A language model behind an OpenAI-compatible `/v1/chat/completions` endpoint.

    `max_retries` defaults to 0. The client's retries (429, 5xx, connection errors
    and timeouts) sleep 0.5 to 8 s between attempts and honour `Retry-After` up to
    120 s: on a live call that is silence, spent before the engine can apologise,
    retry the turn itself or transfer the caller. Failing fast hands that choice to
    the engine, which knows what the caller has heard. Failures in the middle of a
    stream are never retried by the client anyway. A deployment that prefers one
    quiet retry can pass `max_retries=1`; the whole-response budget still bounds it.

    `connect_timeout` bounds opening the connection (capped by each call's
    `timeout`); `first_token_timeout` bounds the wait for the first token.

    The model owns the `openai.AsyncOpenAI` client it creates and closes it in
    `aclose()`. An injected `client` (its base URL, key and retries then apply)
    belongs to the caller and is left open.
    """

    def __init__(
        self,
        *,
        base_url: str = OPENAI_BASE_URL,
        api_key: str | None = None,
        max_retries: int = DEFAULT_MAX_RETRIES,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        first_token_timeout: float = DEFAULT_FIRST_TOKEN_TIMEOUT,
        client: openai.AsyncOpenAI | None = None,
    ) -> None:
        self._connect_timeout = connect_timeout
        self._first_token_timeout = first_token_timeout
        self._owns_client = client is None
        if client is None:
            client = openai.AsyncOpenAI(
                base_url=base_url,
                api_key=api_key or KEYLESS_PLACEHOLDER,
                max_retries=max_retries,
                # A backstop only: every request sets its own, from the call's budget.
                timeout=openai.Timeout(60.0, connect=connect_timeout),
            )
        self._client = client
        self._errors = OpenAIErrorText(client.api_key)
        self._server = _server_name(str(client.base_url))
        self._closed = False

    @property
    def client(self) -> openai.AsyncOpenAI:
        return self._client

    async def aclose(self) -> None:
        """Close the client if this model created it; safe to call more than once."""
        if self._closed:
            return
        self._closed = True
        if self._owns_client:
            await self._client.close()

    async def __aenter__(self) -> OpenAILanguageModel:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def stream(
        self,
        *,
        messages: list[dict[str, Any]],
        tools: list[ToolSpec],
        model: str,
        temperature: float,
        timeout: float,  # noqa: ASYNC109 (the port names it)
    ) -> AsyncGenerator[ModelEvent, None]:
        """Stream one response: `TextDelta`s as they arrive, then one `Completion`.

        A consumer that stops early (the caller barged in) should `aclose()` the
        generator, for example with `contextlib.aclosing`: that closes the HTTP
        response at once instead of whenever the generator is collected.
        """
        if self._closed:
            raise RuntimeError("OpenAILanguageModel.stream() called after aclose()")
        started = asyncio.get_running_loop().time()
        deadline = started + timeout
        first_token_deadline = min(deadline, started + self._first_token_timeout)
        tool_params = [_tool_param(tool) for tool in tools]
        request = self._client.chat.completions.create(
            messages=cast("list[ChatCompletionMessageParam]", messages),
            model=model,
            temperature=temperature,
            tools=tool_params if tool_params else openai.omit,
            stream=True,
            stream_options={"include_usage": True},
            timeout=openai.Timeout(timeout, connect=min(self._connect_timeout, timeout)),
        )
        whole = f"the {timeout:g} s response budget"
        first_token = (
            f"the {self._first_token_timeout:g} s first-token budget"
            if first_token_deadline < deadline
            else whole
        )
        chunks = await self._bounded(request, first_token_deadline, first_token, model)
        turn = _Turn()
        try:
            while True:
                until, budget = (
                    (deadline, whole) if turn.answering else (first_token_deadline, first_token)
                )
                try:
                    chunk = await self._bounded(anext(chunks), until, budget, model)
                except StopAsyncIteration:
                    break
                text = turn.add(chunk)
                if text:
                    yield TextDelta(text)
        finally:
            await chunks.close()
        where = self._where(model)
        if turn.finish_reason is None:
            raise ProviderError(
                f"{where} ended its response without a finish reason: the stream was cut short."
            )
        if any(not call.name for call in turn.tool_calls.values()):
            raise ProviderError(f"{where} sent a tool call without a function name.")
        yield turn.completion()

    async def _bounded(self, step: Awaitable[_T], deadline: float, budget: str, model: str) -> _T:
        """Await one step of the request before `deadline`, translating every failure."""
        where = self._where(model)
        try:
            async with asyncio.timeout_at(deadline):
                return await step
        except TimeoutError as err:
            raise ProviderError(f"{where} exceeded {budget}.") from err
        except openai.OpenAIError as err:
            raise ProviderError(
                self._errors.describe(err, where, reported="reported an error mid-response")
            ) from err
        except json.JSONDecodeError as err:
            raise ProviderError(f"{where} sent a malformed stream event.") from err

    def _where(self, model: str) -> str:
        return f"The language model at {self._server} (model {model})"


@dataclass
class _PendingToolCall:
    id: str = ""
    name: str = ""
    arguments: list[str] = field(default_factory=list)


@dataclass
class _Turn:
    """What one streamed response has said so far."""

    text: list[str] = field(default_factory=list)
    tool_calls: dict[int, _PendingToolCall] = field(default_factory=dict)
    finish_reason: str | None = None
    usage: dict[str, int] = field(default_factory=dict)
    answering: bool = False  # a chunk with text, a tool call or a finish reason arrived

    def add(self, chunk: ChatCompletionChunk) -> str:
        """Take one chunk in; returns its text, possibly empty."""
        if chunk.usage is not None:  # the last chunk, whose `choices` is empty
            self.usage = {
                key: value
                for key, value in chunk.usage.model_dump().items()
                if isinstance(value, int)
            }
        text = ""
        for choice in chunk.choices:
            if choice.index != 0:  # only one choice is ever requested
                continue
            delta = choice.delta
            if delta.content:
                text += delta.content
            for call_delta in delta.tool_calls or ():
                call = self.tool_calls.setdefault(call_delta.index, _PendingToolCall())
                call.id = call.id or call_delta.id or ""
                if call_delta.function is not None:
                    call.name = call.name or call_delta.function.name or ""
                    if call_delta.function.arguments:
                        call.arguments.append(call_delta.function.arguments)
                self.answering = True
            if choice.finish_reason is not None:
                self.finish_reason = choice.finish_reason
                self.answering = True
        if text:
            self.text.append(text)
            self.answering = True
        return text

    def completion(self) -> Completion:
        calls = tuple(
            # Some compatible servers omit ids; the engine still needs one to answer the call.
            ToolCall(
                id=call.id or f"call_{index}", name=call.name, arguments="".join(call.arguments)
            )
            for index, call in sorted(self.tool_calls.items())
        )
        return Completion(
            text="".join(self.text),
            tool_calls=calls,
            finish_reason=self.finish_reason,
            usage=self.usage,
        )


def _tool_param(tool: ToolSpec) -> ChatCompletionFunctionToolParam:
    return {
        "type": "function",
        "function": {
            "name": tool.name,
            "description": tool.description,
            "parameters": dict(tool.parameters),
        },
    }


def _server_name(base_url: str) -> str:
    """The base URL without credentials or query, fit for an error message."""
    parts = urlsplit(base_url)
    host = parts.hostname or "?"
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path.rstrip('/')}"
