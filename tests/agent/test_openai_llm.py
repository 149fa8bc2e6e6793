"""The OpenAI-compatible language model, through the real openai client, against a local server.

What the scenario engine relies on: text arrives in pieces as it streams, the
turn ends with exactly one `Completion` carrying the reassembled tool calls, and
every failure (refusal, cut, error event, stall) is a `ProviderError` that names
the server but never the API key, raised within the call's time budgets.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import Any

import openai
import pytest

from tests.fakes.openai_server import FakeOpenAI, Reply
from voicecrm.agent.factory import language_model_from_settings
from voicecrm.agent.openai_llm import OpenAILanguageModel
from voicecrm.errors import ConfigurationError
from voicecrm.integrations.openai_defaults import OPENAI_BASE_URL
from voicecrm.scenarios.ports import (
    Completion,
    LanguageModel,
    ModelEvent,
    ProviderError,
    TextDelta,
    ToolCall,
    ToolSpec,
)

API_KEY = "sk-test-0123456789abcdefSECRET"
MESSAGES: list[dict[str, Any]] = [
    {"role": "system", "content": "You are the receptionist of Acme."},
    {"role": "user", "content": "Hi, can you note that I called?"},
]
NOTE_TOOL = ToolSpec(
    name="create_crm_note",
    description="Add a note to the caller's timeline.",
    parameters={
        "type": "object",
        "properties": {"content": {"type": "string"}, "type": {"enum": ["info", "todo"]}},
        "required": ["content", "type"],
    },
)
TRANSFER_TOOL = ToolSpec(
    name="transfer",
    description="Transfer the call to a person.",
    parameters={"type": "object", "properties": {"to": {"type": "string"}}},
)


@pytest.fixture
async def llm(openai_server: FakeOpenAI) -> AsyncIterator[OpenAILanguageModel]:
    model = OpenAILanguageModel(base_url=openai_server.base_url, api_key=API_KEY)
    yield model
    await model.aclose()


async def collect(
    model: OpenAILanguageModel,
    *,
    tools: list[ToolSpec] | None = None,
    timeout: float = 5.0,  # noqa: ASYNC109 (passed on to stream())
    into: list[ModelEvent] | None = None,
) -> list[ModelEvent]:
    """Every event of one turn; `into` keeps those that arrived before a failure."""
    events = [] if into is None else into
    stream = model.stream(
        messages=MESSAGES, tools=tools or [], model="gpt-test", temperature=0.3, timeout=timeout
    )
    async with aclosing(stream) as events_in:
        async for event in events_in:
            events.append(event)
    return events


def completion_of(events: list[ModelEvent]) -> Completion:
    assert [type(event) for event in events].count(Completion) == 1
    last = events[-1]
    assert isinstance(last, Completion)
    return last


def texts(events: list[ModelEvent]) -> list[str]:
    return [event.text for event in events if isinstance(event, TextDelta)]


async def failure(model: OpenAILanguageModel, **kwargs: Any) -> ProviderError:
    with pytest.raises(ProviderError) as caught:
        await collect(model, **kwargs)
    return caught.value


# Streaming a reply


async def test_it_is_a_language_model(llm: OpenAILanguageModel) -> None:
    model: LanguageModel = llm  # mypy checks the port is implemented as declared
    assert model is llm


async def test_text_streams_as_several_deltas_then_one_completion(
    openai_server: FakeOpenAI, llm: OpenAILanguageModel
) -> None:
    openai_server.script.append(Reply(text="Hello there, how can I help?", chunk_size=6))

    events = await collect(llm)

    assert texts(events) == ["Hello ", "there,", " how c", "an I h", "elp?"]
    completion = completion_of(events)
    assert completion == Completion(
        text="Hello there, how can I help?",
        tool_calls=(),
        finish_reason="stop",
        usage={"prompt_tokens": 12, "completion_tokens": 5, "total_tokens": 17},
    )


async def test_the_request_carries_the_messages_model_temperature_and_asks_for_usage(
    openai_server: FakeOpenAI, llm: OpenAILanguageModel
) -> None:
    openai_server.script.append(Reply(text="Sure."))

    await collect(llm)

    [body] = openai_server.requests
    assert body["messages"] == MESSAGES
    assert body["model"] == "gpt-test"
    assert body["temperature"] == 0.3
    assert body["stream"] is True
    assert body["stream_options"] == {"include_usage": True}
    assert "tools" not in body
    assert openai_server.headers[0]["Authorization"] == f"Bearer {API_KEY}"


async def test_tools_are_offered_as_functions_with_their_schemas(
    openai_server: FakeOpenAI, llm: OpenAILanguageModel
) -> None:
    openai_server.script.append(Reply(text="Okay."))

    await collect(llm, tools=[NOTE_TOOL, TRANSFER_TOOL])

    assert openai_server.requests[0]["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "create_crm_note",
                "description": "Add a note to the caller's timeline.",
                "parameters": dict(NOTE_TOOL.parameters),
            },
        },
        {
            "type": "function",
            "function": {
                "name": "transfer",
                "description": "Transfer the call to a person.",
                "parameters": dict(TRANSFER_TOOL.parameters),
            },
        },
    ]


async def test_a_tool_call_split_over_many_chunks_is_reassembled(
    openai_server: FakeOpenAI, llm: OpenAILanguageModel
) -> None:
    arguments = '{"content": "Called about the invoice", "type": "info"}'
    openai_server.script.append(Reply(tool_calls=[("create_crm_note", arguments)], chunk_size=4))

    events = await collect(llm, tools=[NOTE_TOOL])

    assert texts(events) == []
    completion = completion_of(events)
    assert completion.tool_calls == (
        ToolCall(id="call_0", name="create_crm_note", arguments=arguments),
    )
    assert completion.finish_reason == "tool_calls"
    assert completion.text == ""


async def test_text_and_several_tool_calls_in_one_response(
    openai_server: FakeOpenAI, llm: OpenAILanguageModel
) -> None:
    note = '{"content": "wants a callback", "type": "todo"}'
    transfer = '{"to": "sales"}'
    openai_server.script.append(
        Reply(
            text="Let me note that and transfer you.",
            tool_calls=[("create_crm_note", note), ("transfer", transfer)],
            chunk_size=3,
        )
    )

    events = await collect(llm, tools=[NOTE_TOOL, TRANSFER_TOOL])

    completion = completion_of(events)
    assert "".join(texts(events)) == completion.text == "Let me note that and transfer you."
    assert completion.tool_calls == (
        ToolCall(id="call_0", name="create_crm_note", arguments=note),
        ToolCall(id="call_1", name="transfer", arguments=transfer),
    )
    assert json.loads(completion.tool_calls[0].arguments)["type"] == "todo"


async def test_usage_from_the_final_chunk_is_captured(
    openai_server: FakeOpenAI, llm: OpenAILanguageModel
) -> None:
    usage = {"prompt_tokens": 321, "completion_tokens": 7, "total_tokens": 328}
    openai_server.script.append(Reply(text="Bye.", usage=usage))

    completion = completion_of(await collect(llm))

    assert completion.usage == usage


async def test_a_length_cut_reply_is_still_a_completion_with_its_reason(
    openai_server: FakeOpenAI, llm: OpenAILanguageModel
) -> None:
    openai_server.script.append(Reply(text="I can tell you that our", finish_reason="length"))

    completion = completion_of(await collect(llm))

    assert (completion.text, completion.finish_reason) == ("I can tell you that our", "length")


# Refusals and retries


@pytest.mark.parametrize(
    ("status", "kind", "expected"),
    [
        (500, "server_error", "HTTP 500"),
        (429, "rate_limit_exceeded", "HTTP 429"),
        (401, "invalid_request_error", "Check the API key"),
    ],
)
async def test_an_http_error_is_a_provider_error_and_is_not_retried_by_default(
    openai_server: FakeOpenAI, llm: OpenAILanguageModel, status: int, kind: str, expected: str
) -> None:
    openai_server.script.append(Reply.http_error(status, "Something is wrong.", type=kind))

    error = await failure(llm)

    assert expected in str(error)
    assert "Something is wrong." in str(error)
    assert openai_server.base_url in str(error)
    assert isinstance(error.__cause__, openai.APIStatusError)
    assert len(openai_server.requests) == 1


@pytest.mark.parametrize(("status", "attempts"), [(500, 2), (429, 2), (401, 1)])
async def test_with_one_retry_configured_only_transient_errors_are_retried(
    openai_server: FakeOpenAI, status: int, attempts: int
) -> None:
    fast = {"retry-after-ms": "10"}  # keeps the client's back-off short
    for _ in range(2):
        openai_server.script.append(Reply.http_error(status, "Try again.", headers=fast))

    async with OpenAILanguageModel(
        base_url=openai_server.base_url, api_key=API_KEY, max_retries=1
    ) as model:
        error = await failure(model)

    assert f"HTTP {status}" in str(error)
    assert len(openai_server.requests) == attempts


async def test_a_retry_that_succeeds_streams_normally(openai_server: FakeOpenAI) -> None:
    openai_server.script += [
        Reply.http_error(503, "Overloaded.", headers={"retry-after-ms": "10"}),
        Reply(text="Back again."),
    ]

    async with OpenAILanguageModel(
        base_url=openai_server.base_url, api_key=API_KEY, max_retries=1
    ) as model:
        completion = completion_of(await collect(model))

    assert completion.text == "Back again."
    assert len(openai_server.requests) == 2


async def test_an_unreachable_server_is_a_provider_error() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # nothing listens there once the probe is closed

    async with OpenAILanguageModel(base_url=f"http://127.0.0.1:{port}/v1", api_key=API_KEY) as m:
        error = await failure(m)

    assert "could not be reached" in str(error)
    assert isinstance(error.__cause__, openai.APIConnectionError)


# Failures in the middle of a stream


async def test_a_stream_that_ends_without_a_finish_reason_is_a_failure(
    openai_server: FakeOpenAI, llm: OpenAILanguageModel
) -> None:
    openai_server.script.append(Reply(text="Our opening hours are", chunk_size=5, stop_after=3))
    before: list[ModelEvent] = []

    error = await failure(llm, into=before)

    assert "without a finish reason" in str(error)
    assert texts(before) == ["Our o", "penin"]
    assert not any(isinstance(event, Completion) for event in before)


async def test_a_dropped_connection_mid_stream_is_a_failure(
    openai_server: FakeOpenAI, llm: OpenAILanguageModel
) -> None:
    openai_server.script.append(Reply(text="Our opening hours are", stop_after=3, abort=True))
    before: list[ModelEvent] = []

    error = await failure(llm, into=before)

    assert "dropped the connection" in str(error)
    assert isinstance(error.__cause__, openai.APIConnectionError)
    assert not any(isinstance(event, Completion) for event in before)


async def test_an_error_event_inside_the_stream_is_a_failure(
    openai_server: FakeOpenAI, llm: OpenAILanguageModel
) -> None:
    overloaded = {"message": "The model is overloaded.", "type": "server_error", "code": None}
    openai_server.script.append(Reply(text="Let me check", stop_after=2, error=overloaded))
    before: list[ModelEvent] = []

    error = await failure(llm, into=before)

    assert "mid-response: The model is overloaded." in str(error)
    assert type(error.__cause__) is openai.APIError
    assert texts(before) == ["Let m"]


# Time budgets


async def test_a_server_that_never_answers_trips_the_budget_quickly(
    openai_server: FakeOpenAI, llm: OpenAILanguageModel
) -> None:
    openai_server.script.append(Reply(text="Too late.", stall=asyncio.Event()))

    started = time.monotonic()
    error = await failure(llm, timeout=0.2)

    assert time.monotonic() - started < 1.0
    assert "exceeded the 0.2 s response budget" in str(error)


async def test_a_model_slow_to_start_trips_the_first_token_budget(
    openai_server: FakeOpenAI,
) -> None:
    # The role chunk arrives at once; the first token never does.
    openai_server.script.append(Reply(text="Too late.", stall=asyncio.Event(), stall_after=1))

    async with OpenAILanguageModel(
        base_url=openai_server.base_url, api_key=API_KEY, first_token_timeout=0.2
    ) as model:
        started = time.monotonic()
        error = await failure(model, timeout=5.0)

    assert time.monotonic() - started < 1.0
    assert "exceeded the 0.2 s first-token budget" in str(error)


async def test_a_stream_that_stalls_after_starting_trips_the_response_budget(
    openai_server: FakeOpenAI, llm: OpenAILanguageModel
) -> None:
    openai_server.script.append(Reply(text="Hello, and then", stall=asyncio.Event(), stall_after=2))
    before: list[ModelEvent] = []

    started = time.monotonic()
    error = await failure(llm, timeout=0.3, into=before)

    assert time.monotonic() - started < 1.0
    assert "exceeded the 0.3 s response budget" in str(error)
    assert texts(before) == ["Hello"]


async def test_a_stalled_reply_completes_once_released(
    openai_server: FakeOpenAI, llm: OpenAILanguageModel
) -> None:
    release = asyncio.Event()
    openai_server.script.append(Reply(text="Here I am.", stall=release, stall_after=2))
    events: list[ModelEvent] = []

    stream = llm.stream(messages=MESSAGES, tools=[], model="m", temperature=0, timeout=5)
    async with aclosing(stream) as events_in:
        async for event in events_in:
            events.append(event)
            release.set()  # the server holds the rest until the first piece has arrived

    assert texts(events) == ["Here ", "I am."]
    assert completion_of(events).text == "Here I am."


# The API key


async def test_the_api_key_never_appears_in_error_messages(openai_server: FakeOpenAI) -> None:
    # A careless server echoing the whole key, which real OpenAI masks.
    openai_server.script += [
        Reply.http_error(
            401,
            "Incorrect API key provided: {api_key}.",
            type="invalid_request_error",
            code="invalid_api_key",
        ),
        Reply(text="x", stop_after=2, error={"message": f"bad key {API_KEY}"}),
        Reply(text="x", stop_after=2),
    ]

    async with OpenAILanguageModel(base_url=openai_server.base_url, api_key=API_KEY) as model:
        errors = [await failure(model) for _ in range(3)]

    assert API_KEY in str(errors[0].__cause__)  # the server did echo it...
    for error in errors:
        assert API_KEY not in str(error)  # ...but our messages never carry it
        assert API_KEY not in repr(error.extra)
    assert "Incorrect API key provided: [redacted]. Check the API key." in str(errors[0])
    assert "(invalid_api_key)" in str(errors[0])


# Lifecycle


async def test_aclose_closes_the_client_the_model_created(openai_server: FakeOpenAI) -> None:
    model = OpenAILanguageModel(base_url=openai_server.base_url, api_key=API_KEY)
    openai_server.script.append(Reply(text="Hi."))
    await collect(model)

    await model.aclose()
    await model.aclose()

    assert model.client.is_closed()
    with pytest.raises(RuntimeError):
        await collect(model)


async def test_an_injected_client_is_used_and_left_open(openai_server: FakeOpenAI) -> None:
    client = openai.AsyncOpenAI(base_url=openai_server.base_url, api_key=API_KEY, max_retries=0)
    openai_server.script.append(Reply(text="Injected."))
    try:
        model = OpenAILanguageModel(client=client)
        completion = completion_of(await collect(model))
        await model.aclose()

        assert completion.text == "Injected."
        assert not client.is_closed()
    finally:
        await client.close()


async def test_a_consumer_that_stops_early_closes_the_stream(
    openai_server: FakeOpenAI, llm: OpenAILanguageModel
) -> None:
    openai_server.script += [Reply(text="A long answer " * 20), Reply(text="Next turn.")]

    stream = llm.stream(messages=MESSAGES, tools=[], model="m", temperature=0, timeout=5)
    async with aclosing(stream) as events:
        async for event in events:
            assert isinstance(event, TextDelta)
            break  # the caller barged in

    assert completion_of(await collect(llm)).text == "Next turn."


# Building the model from settings


def test_nothing_configured_means_no_model() -> None:
    assert language_model_from_settings(None, None) is None
    assert language_model_from_settings("  ", "") is None


async def test_a_key_alone_means_openai_itself() -> None:
    model = language_model_from_settings(None, API_KEY)
    assert model is not None
    try:
        assert str(model.client.base_url).rstrip("/") == OPENAI_BASE_URL
        assert model.client.api_key == API_KEY
        assert model.client.max_retries == 0
    finally:
        await model.aclose()


async def test_a_base_url_alone_means_a_keyless_local_server(openai_server: FakeOpenAI) -> None:
    openai_server.script.append(Reply(text="From Ollama."))
    model = language_model_from_settings(openai_server.base_url, None)
    assert model is not None
    try:
        assert completion_of(await collect(model)).text == "From Ollama."
    finally:
        await model.aclose()


def test_a_base_url_that_is_not_http_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError):
        language_model_from_settings("localhost:11434/v1", None)


# The fake itself


async def test_the_fake_also_answers_without_streaming(openai_server: FakeOpenAI) -> None:
    openai_server.script.append(Reply(text="Plain.", tool_calls=[("transfer", '{"to": "x"}')]))

    async with openai.AsyncOpenAI(
        base_url=openai_server.base_url, api_key=API_KEY, max_retries=0
    ) as client:
        response = await client.chat.completions.create(
            messages=[{"role": "user", "content": "hi"}], model="m"
        )

    choice = response.choices[0]
    assert choice.message.content == "Plain."
    assert choice.finish_reason == "tool_calls"
    assert choice.message.tool_calls is not None
    assert response.usage is not None and response.usage.total_tokens == 17
