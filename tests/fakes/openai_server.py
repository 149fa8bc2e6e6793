"""A scripted OpenAI-compatible Chat Completions server, for tests of the real openai client.

POST /v1/chat/completions answers with the next scripted `Reply`, streamed as the
real API streams it: Server-Sent Events `data: {chat.completion.chunk}`, a first
chunk with the assistant role, text and tool-call arguments in several pieces, a
last chunk with `finish_reason`, then (with `stream_options.include_usage`) a
usage chunk whose `choices` is empty, then `data: [DONE]`. Non-streaming
requests get one `chat.completion` object.

A reply can also fail the way real servers do: an HTTP error with an OpenAI-style
error body, a stream that stops early (cleanly or by dropping the connection), an
error event inside the stream, or a stall until the test sets an `asyncio.Event`.
Every request body and its headers are recorded.

The audio endpoints answer from the same script:

- POST /v1/audio/transcriptions reads the multipart form the client uploads
  (recorded with the file as an `Upload`) and answers `{"text": reply.text}`;
- POST /v1/audio/speech records the JSON body and streams `reply.audio` back as
  raw bytes, in pieces of `reply.audio_chunks` sizes, as a chunked body.

Stalls, HTTP errors, `stop_after` and `abort` work there as for chat completions,
counting pieces of audio instead of chunks.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer


@dataclass
class Reply:
    """One scripted answer; the defaults stream `text` and `tool_calls` and end with "stop".

    `tool_calls` are (name, arguments JSON text) pairs; their ids are `call_0`, `call_1`...
    `chunk_size` is how many characters of text or arguments each chunk carries.
    `stop_after`: send only this many chunks (the role chunk counts), then, without a
    finish_reason or `[DONE]`: send `error` as an in-stream error event if it is set,
    else drop the connection if `abort`, else end the body normally.
    `stall`: wait for this event after `stall_after` chunks; 0 stalls before the status
    line, while the client is still waiting for the response to start.
    `status` >= 400 answers with `{"error": error}` as the JSON body instead.
    `audio` is what /v1/audio/speech streams back; `audio_chunks` are the sizes of
    its first pieces (odd sizes split samples, as real servers do), and whatever
    remains follows in one last piece.
    `path`: only a request to this endpoint takes the reply, for requests that may
    come in either order (a voicemail transcribed while the goodbye is spoken).
    """

    text: str = ""
    tool_calls: Sequence[tuple[str, str]] = ()
    finish_reason: str | None = None
    chunk_size: int = 5
    usage: Mapping[str, int] = field(
        default_factory=lambda: {"prompt_tokens": 12, "completion_tokens": 5, "total_tokens": 17}
    )
    status: int = 200
    error: Mapping[str, Any] | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    stop_after: int | None = None
    abort: bool = False
    stall: asyncio.Event | None = None
    stall_after: int = 0
    audio: bytes = b""
    audio_chunks: Sequence[int] = ()
    path: str | None = None

    @classmethod
    def http_error(
        cls,
        status: int,
        message: str,
        *,
        type: str = "server_error",
        code: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Reply:
        """An OpenAI-style error response; `{api_key}` in `message` echoes the bearer token."""
        error = {"message": message, "type": type, "param": None, "code": code}
        return cls(status=status, error=error, headers=headers or {})


@dataclass(frozen=True)
class Upload:
    """A file uploaded in a multipart form, as /v1/audio/transcriptions received it."""

    filename: str
    content_type: str
    data: bytes


def _audio_pieces(reply: Reply) -> list[bytes]:
    pieces, start = [], 0
    for size in reply.audio_chunks:
        pieces.append(reply.audio[start : start + size])
        start += size
    if start < len(reply.audio):
        pieces.append(reply.audio[start:])
    return [piece for piece in pieces if piece]


def _pieces(text: str, size: int) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)]


def _deltas(reply: Reply) -> list[dict[str, Any]]:
    """The `delta` of every chunk before the last, as the real API splits a response."""
    deltas: list[dict[str, Any]] = [{"role": "assistant", "content": "", "refusal": None}]
    deltas += [{"content": piece} for piece in _pieces(reply.text, reply.chunk_size)]
    for index, (name, arguments) in enumerate(reply.tool_calls):
        first = {
            "index": index,
            "id": f"call_{index}",
            "type": "function",
            "function": {"name": name, "arguments": ""},
        }
        deltas.append({"tool_calls": [first]})
        deltas += [
            {"tool_calls": [{"index": index, "function": {"arguments": piece}}]}
            for piece in _pieces(arguments, reply.chunk_size)
        ]
    return deltas


class FakeOpenAI:
    """The server's state: `script` is consumed in order by every endpoint (a reply
    with a `path` only by that one);
    `requests`, `headers` and `paths` (which endpoint each request went to) fill up."""

    def __init__(self) -> None:
        self.script: list[Reply] = []
        self.requests: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self.paths: list[str] = []
        self.base_url = ""
        self._stalled: list[Reply] = []
        self._arrived = asyncio.Condition()
        self.app = web.Application()
        self.app.router.add_post("/v1/chat/completions", self._chat_completions)
        self.app.router.add_post("/v1/audio/transcriptions", self._transcriptions)
        self.app.router.add_post("/v1/audio/speech", self._speech)

    def release(self) -> None:
        """Set every stall event still scripted or waiting, so no handler outlives a test."""
        for reply in self.script + self._stalled:
            if reply.stall is not None:
                reply.stall.set()

    async def requested(self, path: str, times: int = 1) -> None:
        """Returns once `path` has been requested `times` times."""
        async with self._arrived:
            await self._arrived.wait_for(lambda: self.paths.count(path) >= times)

    async def _next_reply(self, request: web.Request, body: dict[str, Any]) -> Reply | web.Response:
        """Record the request and take the next scripted reply, or answer its HTTP error."""
        self.requests.append(body)
        self.headers.append(dict(request.headers))
        self.paths.append(request.path)
        async with self._arrived:
            self._arrived.notify_all()
        taken = next(
            (i for i, reply in enumerate(self.script) if reply.path in (None, request.path)), None
        )
        if taken is None:
            return web.json_response({"error": {"message": "fake: no reply scripted"}}, status=500)
        reply = self.script.pop(taken)
        if reply.stall is not None:
            self._stalled.append(reply)
        if reply.stall is not None and reply.stall_after == 0:
            await reply.stall.wait()
        if reply.status >= 400:
            api_key = request.headers.get("Authorization", "").removeprefix("Bearer ")
            error = dict(reply.error or {})
            error["message"] = str(error.get("message", "")).replace("{api_key}", api_key)
            return web.json_response({"error": error}, status=reply.status, headers=reply.headers)
        return reply

    async def _transcriptions(self, request: web.Request) -> web.StreamResponse:
        form: dict[str, Any] = {}
        for name, value in (await request.post()).items():
            if isinstance(value, web.FileField):
                with value.file:  # a temporary file aiohttp leaves to the handler to close
                    form[name] = Upload(value.filename, value.content_type, value.file.read())
            else:
                form[name] = value
        reply = await self._next_reply(request, form)
        if isinstance(reply, web.Response):
            return reply
        return web.json_response({"text": reply.text}, headers=reply.headers)

    async def _speech(self, request: web.Request) -> web.StreamResponse:
        reply = await self._next_reply(request, await request.json())
        if isinstance(reply, web.Response):
            return reply
        response = web.StreamResponse(
            headers={"Content-Type": "application/octet-stream", **reply.headers}
        )
        await response.prepare(request)
        for sent, piece in enumerate(_audio_pieces(reply)):
            if reply.stall is not None and sent == reply.stall_after:
                await reply.stall.wait()
            if sent == reply.stop_after:
                return await self._stop(request, response, reply)
            await response.write(piece)
        if reply.stop_after is not None:
            return await self._stop(request, response, reply)
        await response.write_eof()
        return response

    async def _chat_completions(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        reply = await self._next_reply(request, body)
        if isinstance(reply, web.Response):
            return reply
        chunk_id, created, model = (
            f"chatcmpl-fake{len(self.requests)}",
            int(time.time()),
            body["model"],
        )
        finish = reply.finish_reason or ("tool_calls" if reply.tool_calls else "stop")
        deltas = _deltas(reply)
        if not body.get("stream"):
            return web.json_response(self._completion(reply, chunk_id, created, model, finish))

        with_usage = bool((body.get("stream_options") or {}).get("include_usage"))

        def chunk(choices: list[dict[str, Any]], usage: Mapping[str, int] | None = None) -> bytes:
            data: dict[str, Any] = {
                "id": chunk_id,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "choices": choices,
            }
            if with_usage:
                data["usage"] = usage
            return f"data: {json.dumps(data)}\n\n".encode()

        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", **reply.headers}
        )
        await response.prepare(request)
        for sent, delta in enumerate(deltas):
            if reply.stall is not None and sent == reply.stall_after:
                await reply.stall.wait()
            if sent == reply.stop_after:
                return await self._stop(request, response, reply)
            await response.write(chunk([{"index": 0, "delta": delta, "finish_reason": None}]))
        if reply.stop_after is not None:
            return await self._stop(request, response, reply)
        await response.write(chunk([{"index": 0, "delta": {}, "finish_reason": finish}]))
        if with_usage:
            await response.write(chunk([], reply.usage))
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response

    async def _stop(
        self, request: web.Request, response: web.StreamResponse, reply: Reply
    ) -> web.StreamResponse:
        if reply.error is not None:
            await response.write(f"data: {json.dumps({'error': reply.error})}\n\n".encode())
        elif reply.abort:
            assert request.transport is not None
            request.transport.abort()
            return response
        await response.write_eof()
        return response

    @staticmethod
    def _completion(
        reply: Reply, chunk_id: str, created: int, model: str, finish: str
    ) -> dict[str, Any]:
        calls = [
            {
                "id": f"call_{i}",
                "type": "function",
                "function": {"name": name, "arguments": arguments},
            }
            for i, (name, arguments) in enumerate(reply.tool_calls)
        ]
        message = {
            "role": "assistant",
            "content": reply.text or None,
            "refusal": None,
            "tool_calls": calls or None,
        }
        return {
            "id": chunk_id,
            "object": "chat.completion",
            "created": created,
            "model": model,
            "choices": [
                {"index": 0, "message": message, "finish_reason": finish, "logprobs": None}
            ],
            "usage": dict(reply.usage),
        }


AiohttpServer = Callable[[web.Application], Awaitable[TestServer]]


@pytest.fixture
async def openai_server(aiohttp_server: AiohttpServer) -> AsyncIterator[FakeOpenAI]:
    """A `FakeOpenAI` on 127.0.0.1; its `base_url` ends in /v1, as clients expect."""
    fake = FakeOpenAI()
    server = await aiohttp_server(fake.app)
    fake.base_url = str(server.make_url("/v1"))
    try:
        yield fake
    finally:
        fake.release()
