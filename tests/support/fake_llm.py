"""A scripted fake LLM server for end-to-end tests. Standard library only.

It speaks just enough of the providers' HTTP APIs for the shipped agent CLIs to run a
job against it:

- Anthropic Messages: `POST /v1/messages` (SSE stream or one JSON body),
  `POST /v1/messages/count_tokens`, `GET /v1/models`;
- OpenAI: `POST /v1/chat/completions` (stream or not), `POST /v1/responses` (the
  Responses API, streamed or not), `GET /v1/models`;
- Gemini: `POST /v1beta/models/{model}:generateContent`, `:streamGenerateContent` (SSE),
  `:countTokens`;
- anything else is recorded and answered 404 (`/api/event_logging/*`: 200, so a CLI
  that logs events carries on; the record shows that it tried).

Every request is recorded (method, path, headers, JSON body) for assertions.

A script is a list of turns; each turn is the assistant's answer: some text and/or tool
calls. Which turn answers a request is decided by the request itself, not by a counter:
the number of assistant turns already in the conversation it carries. So a retried
request gets the same answer, and calls on the side (a CLI asking for a title, checking
a command's prefix) do not eat the script: a request that offers no tools is a side call
and gets `side_text`, unless `side_text` is None (every request then follows the script,
for engines that never offer tools). `{tool_result}` in a turn's text is replaced by the
output of the agent's last tool call, as the request carries it back. Past the script's
end, the last turn's text is repeated without tool calls, so an agent always finishes.

Use it in-process (`with FakeLLM(...) as fake: fake.url`), or run it as a program
(`python3 fake_llm.py --host 0.0.0.0 --port 8000`), e.g. in a container built from the
worker image; a test then scripts and reads it over HTTP:
`PUT /_fake/script` (body: {"turns": [...], "side_text": ..., "usage": {...}}),
`GET /_fake/requests`, `DELETE /_fake/requests`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import re
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

DEFAULT_USAGE = {"input_tokens": 120, "output_tokens": 30}
CONTROL = "/_fake/"
TOOL_RESULT = "{tool_result}"


@dataclass(frozen=True)
class ToolCall:
    name: str
    input: dict[str, Any]


@dataclass(frozen=True)
class Turn:
    """One assistant answer. `usage` overrides the script's token counts for this turn."""

    text: str = ""
    tool_calls: tuple[ToolCall, ...] = ()
    usage: dict[str, int] | None = None

    @classmethod
    def from_json(cls, value: dict[str, Any]) -> Turn:
        calls = tuple(
            ToolCall(c["name"], dict(c.get("input", {}))) for c in value.get("tool_calls", [])
        )
        return cls(str(value.get("text", "")), calls, value.get("usage"))


def text(answer: str) -> Turn:
    return Turn(text=answer)


def tool(name: str, **arguments: Any) -> Turn:
    return Turn(tool_calls=(ToolCall(name, arguments),))


@dataclass
class Recorded:
    """One request as the fake received it, and what the fake answered."""

    method: str
    path: str
    headers: dict[str, str]
    body: Any
    api: str = ""
    turn: int | None = None
    side: bool = False
    usage: dict[str, int] | None = None
    at: float = field(default_factory=time.time)

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())


@dataclass
class Script:
    turns: list[Turn] = field(default_factory=list)
    side_text: str | None = "ok"
    usage: dict[str, int] = field(default_factory=lambda: dict(DEFAULT_USAGE))

    def answer(self, index: int, side: bool) -> Turn:
        if side:
            return Turn(text=self.side_text or "ok")
        if index < len(self.turns):
            return self.turns[index]
        if not self.turns:
            return Turn(text="done")
        return replace(self.turns[-1], tool_calls=())

    def usage_of(self, turn: Turn) -> dict[str, int]:
        return dict(turn.usage or self.usage)


# --- conversation state: which turn is this request asking for -----------------------


def anthropic_turn(body: dict[str, Any]) -> int:
    return sum(1 for m in body.get("messages", []) if m.get("role") == "assistant")


def chat_turn(body: dict[str, Any]) -> int:
    return sum(1 for m in body.get("messages", []) if m.get("role") == "assistant")


def responses_turn(body: dict[str, Any]) -> int:
    """Runs of assistant-made items (messages, function calls, reasoning) in the input:
    one run per earlier turn."""
    items = body.get("input")
    if not isinstance(items, list):
        return 0
    turns, inside = 0, False
    for item in items:
        made = item.get("type") in (
            "function_call",
            "reasoning",
            "local_shell_call",
            "custom_tool_call",
        )
        made = made or item.get("role") == "assistant"
        if made and not inside:
            turns += 1
        inside = made
    return turns


def last_tool_result(body: dict[str, Any]) -> str:
    """The text of the last tool result the request carries back (any API), or ""."""
    found = ""
    for message in body.get("messages", []):
        content = message.get("content")
        if message.get("role") == "tool":
            found = _plain(content)
        elif isinstance(content, list):
            for block in content:
                if isinstance(block, dict) and block.get("type") == "tool_result":
                    found = _plain(block.get("content"))
    for content in body.get("contents", []):
        for part in content.get("parts", []) if isinstance(content, dict) else []:
            response = part.get("functionResponse") if isinstance(part, dict) else None
            if isinstance(response, dict):
                output = (response.get("response") or {}).get("output", response.get("response"))
                found = _plain(output)
    items = body.get("input")
    for item in items if isinstance(items, list) else []:
        if isinstance(item, dict) and item.get("type") == "function_call_output":
            found = _plain(item.get("output"))
    return found


def _plain(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(_plain(part.get("text", "")) for part in content if isinstance(part, dict))
    return "" if content is None else json.dumps(content)


def with_tool_result(turn: Turn, result: str) -> Turn:
    """`{tool_result}` in a turn's text becomes what the agent's last tool call returned:
    the answer then shows what really happened in the worker."""
    if TOOL_RESULT not in turn.text:
        return turn
    return replace(turn, text=turn.text.replace(TOOL_RESULT, result.strip()))


def offers_tools(body: dict[str, Any]) -> bool:
    return bool(body.get("tools"))


# --- Anthropic Messages ---------------------------------------------------------------


def _id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:24]}"


def anthropic_blocks(turn: Turn) -> list[dict[str, Any]]:
    blocks: list[dict[str, Any]] = []
    if turn.text:
        blocks.append({"type": "text", "text": turn.text})
    for call in turn.tool_calls:
        blocks.append(
            {"type": "tool_use", "id": _id("toolu"), "name": call.name, "input": call.input}
        )
    return blocks


def anthropic_message(turn: Turn, model: str, usage: dict[str, int]) -> dict[str, Any]:
    return {
        "id": _id("msg"),
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": anthropic_blocks(turn),
        "stop_reason": "tool_use" if turn.tool_calls else "end_turn",
        "stop_sequence": None,
        "usage": _anthropic_usage(usage),
    }


def _anthropic_usage(usage: dict[str, int]) -> dict[str, int]:
    return {
        "input_tokens": usage["input_tokens"],
        "output_tokens": usage["output_tokens"],
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
    }


def anthropic_events(turn: Turn, model: str, usage: dict[str, int]) -> Iterator[tuple[str, Any]]:
    message = anthropic_message(turn, model, usage)
    blocks = message["content"]
    start = {**message, "content": [], "stop_reason": None}
    start["usage"] = {**message["usage"], "output_tokens": 1}
    yield "message_start", {"type": "message_start", "message": start}
    for index, block in enumerate(blocks):
        empty = {**block, "text": ""} if block["type"] == "text" else {**block, "input": {}}
        yield (
            "content_block_start",
            {"type": "content_block_start", "index": index, "content_block": empty},
        )
        if block["type"] == "text":
            delta = {"type": "text_delta", "text": block["text"]}
        else:
            delta = {"type": "input_json_delta", "partial_json": json.dumps(block["input"])}
        yield "content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta}
        yield "content_block_stop", {"type": "content_block_stop", "index": index}
    yield (
        "message_delta",
        {
            "type": "message_delta",
            "delta": {"stop_reason": message["stop_reason"], "stop_sequence": None},
            "usage": {"output_tokens": usage["output_tokens"]},
        },
    )
    yield "message_stop", {"type": "message_stop"}


# --- OpenAI Chat Completions ----------------------------------------------------------


def chat_tool_calls(turn: Turn) -> list[dict[str, Any]]:
    return [
        {
            "index": i,
            "id": _id("call"),
            "type": "function",
            "function": {"name": c.name, "arguments": json.dumps(c.input)},
        }
        for i, c in enumerate(turn.tool_calls)
    ]


def _chat_usage(usage: dict[str, int]) -> dict[str, int]:
    total = usage["input_tokens"] + usage["output_tokens"]
    return {
        "prompt_tokens": usage["input_tokens"],
        "completion_tokens": usage["output_tokens"],
        "total_tokens": total,
    }


def chat_completion(turn: Turn, model: str, usage: dict[str, int]) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": turn.text or None}
    if turn.tool_calls:
        message["tool_calls"] = [
            {k: v for k, v in c.items() if k != "index"} for c in chat_tool_calls(turn)
        ]
    return {
        "id": _id("chatcmpl"),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "message": message, "finish_reason": _chat_finish(turn)}],
        "usage": _chat_usage(usage),
    }


def _chat_finish(turn: Turn) -> str:
    return "tool_calls" if turn.tool_calls else "stop"


def chat_chunks(turn: Turn, model: str, usage: dict[str, int], with_usage: bool) -> Iterator[Any]:
    base = {
        "id": _id("chatcmpl"),
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": model,
    }

    def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {**base, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}

    yield chunk({"role": "assistant", "content": ""})
    if turn.text:
        yield chunk({"content": turn.text})
    if turn.tool_calls:
        yield chunk({"tool_calls": chat_tool_calls(turn)})
    final = chunk({}, _chat_finish(turn))
    if not with_usage:
        final["usage"] = _chat_usage(usage)  # some clients read it from the last chunk
    yield final
    if with_usage:
        yield {**base, "choices": [], "usage": _chat_usage(usage)}


# --- OpenAI Responses -----------------------------------------------------------------


def response_items(turn: Turn) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    if turn.text:
        content = [{"type": "output_text", "text": turn.text, "annotations": []}]
        items.append(
            {
                "type": "message",
                "id": _id("msg"),
                "role": "assistant",
                "status": "completed",
                "content": content,
            }
        )
    for call in turn.tool_calls:
        items.append(
            {
                "type": "function_call",
                "id": _id("fc"),
                "call_id": _id("call"),
                "name": call.name,
                "arguments": json.dumps(call.input),
                "status": "completed",
            }
        )
    return items


def response_object(
    turn: Turn, model: str, usage: dict[str, int], status: str = "completed"
) -> dict[str, Any]:
    done = status == "completed"
    return {
        "id": _id("resp"),
        "object": "response",
        "created_at": int(time.time()),
        "status": status,
        "model": model,
        "output": response_items(turn) if done else [],
        "usage": _responses_usage(usage) if done else None,
    }


def _responses_usage(usage: dict[str, int]) -> dict[str, Any]:
    return {
        "input_tokens": usage["input_tokens"],
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": usage["output_tokens"],
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": usage["input_tokens"] + usage["output_tokens"],
    }


def response_events(turn: Turn, model: str, usage: dict[str, int]) -> Iterator[tuple[str, Any]]:
    final = response_object(turn, model, usage)
    started = {**final, "status": "in_progress", "output": [], "usage": None}
    seq = iter(range(1_000_000))
    yield (
        "response.created",
        {"type": "response.created", "sequence_number": next(seq), "response": started},
    )
    yield (
        "response.in_progress",
        {"type": "response.in_progress", "sequence_number": next(seq), "response": started},
    )
    for index, item in enumerate(final["output"]):
        common = {"output_index": index, "item_id": item["id"]}
        opening = {**item, "status": "in_progress"}
        if item["type"] == "message":
            opening["content"] = []
        added = {"type": "response.output_item.added", "output_index": index, "item": opening}
        yield "response.output_item.added", {**added, "sequence_number": next(seq)}
        if item["type"] == "message":
            part = {"type": "output_text", "text": "", "annotations": []}
            yield (
                "response.content_part.added",
                {
                    "type": "response.content_part.added",
                    **common,
                    "content_index": 0,
                    "part": part,
                    "sequence_number": next(seq),
                },
            )
            delta = {
                "type": "response.output_text.delta",
                **common,
                "content_index": 0,
                "delta": turn.text,
            }
            yield "response.output_text.delta", {**delta, "sequence_number": next(seq)}
            done_text = {
                "type": "response.output_text.done",
                **common,
                "content_index": 0,
                "text": turn.text,
            }
            yield "response.output_text.done", {**done_text, "sequence_number": next(seq)}
            yield (
                "response.content_part.done",
                {
                    "type": "response.content_part.done",
                    **common,
                    "content_index": 0,
                    "part": item["content"][0],
                    "sequence_number": next(seq),
                },
            )
        else:
            args = {
                "type": "response.function_call_arguments.delta",
                **common,
                "delta": item["arguments"],
            }
            yield "response.function_call_arguments.delta", {**args, "sequence_number": next(seq)}
            args_done = {
                "type": "response.function_call_arguments.done",
                **common,
                "arguments": item["arguments"],
            }
            yield (
                "response.function_call_arguments.done",
                {**args_done, "sequence_number": next(seq)},
            )
        done = {"type": "response.output_item.done", "output_index": index, "item": item}
        yield "response.output_item.done", {**done, "sequence_number": next(seq)}
    yield (
        "response.completed",
        {"type": "response.completed", "sequence_number": next(seq), "response": final},
    )


# --- Gemini API -----------------------------------------------------------------------

GEMINI_MODEL_CALL = re.compile(r"^/v1beta/models/([^/:]+):([A-Za-z]+)$")


def gemini_turn(body: dict[str, Any]) -> int:
    return sum(1 for c in body.get("contents", []) if c.get("role") == "model")


def gemini_response(turn: Turn, model: str, usage: dict[str, int]) -> dict[str, Any]:
    parts: list[dict[str, Any]] = []
    if turn.text:
        parts.append({"text": turn.text})
    for call in turn.tool_calls:
        parts.append({"functionCall": {"name": call.name, "args": call.input}})
    candidate = {"content": {"role": "model", "parts": parts}, "finishReason": "STOP", "index": 0}
    return {
        "candidates": [candidate],
        "usageMetadata": {
            "promptTokenCount": usage["input_tokens"],
            "candidatesTokenCount": usage["output_tokens"],
            "totalTokenCount": usage["input_tokens"] + usage["output_tokens"],
        },
        "modelVersion": model,
    }


# --- the server -----------------------------------------------------------------------


class FakeLLM:
    """The server and its state: the script and every request received."""

    def __init__(
        self,
        turns: list[Turn] | None = None,
        *,
        side_text: str | None = "ok",
        usage: dict[str, int] | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.script = Script(list(turns or []), side_text, dict(usage or DEFAULT_USAGE))
        self._requests: list[Recorded] = []
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer((host, port), _handler_for(self))
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        host = str(self._server.server_address[0])
        return f"http://{'127.0.0.1' if host == '0.0.0.0' else host}:{self.port}"

    def start(self) -> FakeLLM:
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.05,), name="fake-llm", daemon=True
        )
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        """Serve in this thread (the program's way), until interrupted."""
        with contextlib.suppress(KeyboardInterrupt):
            self._server.serve_forever()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> FakeLLM:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def set_script(
        self,
        turns: list[Turn],
        *,
        side_text: str | None = "ok",
        usage: dict[str, int] | None = None,
    ) -> None:
        with self._lock:
            self.script = Script(list(turns), side_text, dict(usage or DEFAULT_USAGE))

    @property
    def requests(self) -> list[Recorded]:
        with self._lock:
            return list(self._requests)

    def model_calls(self) -> list[Recorded]:
        """Requests that asked for a completion (any API)."""
        return [r for r in self.requests if r.api in ("messages", "chat", "responses", "gemini")]

    def clear(self) -> None:
        with self._lock:
            self._requests.clear()

    def record(self, request: Recorded) -> None:
        with self._lock:
            self._requests.append(request)


def _handler_for(fake: FakeLLM) -> type[BaseHTTPRequestHandler]:
    class Handler(_Handler):
        pass

    Handler.fake = fake
    return Handler


class _Handler(BaseHTTPRequestHandler):
    fake: FakeLLM
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass  # tests read the record, not stderr

    def do_GET(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    def do_PUT(self) -> None:
        self._dispatch()

    def do_DELETE(self) -> None:
        self._dispatch()

    def do_HEAD(self) -> None:
        self._dispatch()

    def _dispatch(self) -> None:
        path = urlsplit(self.path).path
        raw = self._read_body()
        if path.startswith(CONTROL):
            self._control(path[len(CONTROL) :], raw)
            return
        body = _json_or_text(raw)
        headers = {k.lower(): v for k, v in self.headers.items()}
        recorded = Recorded(self.command, self.path, headers, body)
        self.fake.record(recorded)
        route = ROUTES.get((self.command, _normalize(path)))
        if route is None and GEMINI_MODEL_CALL.match(path) and self.command == "POST":
            route = _Handler.on_gemini
        if route is None:
            self._other(path, recorded)
            return
        route(self, recorded)

    def _read_body(self) -> bytes:
        length = int(self.headers.get("content-length") or 0)
        return self.rfile.read(length) if length else b""

    # --- completions ---

    def _turn_for(self, recorded: Recorded, api: str, index: int, body: dict[str, Any]) -> Turn:
        script = self.fake.script
        side = script.side_text is not None and not offers_tools(body)
        turn = with_tool_result(script.answer(index, side), last_tool_result(body))
        recorded.api, recorded.turn, recorded.side = api, (None if side else index), side
        recorded.usage = script.usage_of(turn)
        return turn

    def on_messages(self, recorded: Recorded) -> None:
        body = _as_dict(recorded.body)
        turn = self._turn_for(recorded, "messages", anthropic_turn(body), body)
        model = str(body.get("model", "claude-fake"))
        assert recorded.usage is not None
        if body.get("stream"):
            self._sse(anthropic_events(turn, model, recorded.usage), named=True)
        else:
            self._json(200, anthropic_message(turn, model, recorded.usage))

    def on_gemini(self, recorded: Recorded) -> None:
        match = GEMINI_MODEL_CALL.match(urlsplit(self.path).path)
        assert match is not None
        model, method = match.groups()
        body = _as_dict(recorded.body)
        if method == "countTokens":
            recorded.api = "count_tokens"
            self._json(200, {"totalTokens": max(1, len(json.dumps(body)) // 4)})
            return
        if method not in ("generateContent", "streamGenerateContent"):
            self._other(self.path, recorded)
            return
        turn = self._turn_for(recorded, "gemini", gemini_turn(body), body)
        assert recorded.usage is not None
        answer = gemini_response(turn, model, recorded.usage)
        if method == "streamGenerateContent":
            self._sse(iter([("", answer)]), named=False)
        else:
            self._json(200, answer)

    def on_count_tokens(self, recorded: Recorded) -> None:
        recorded.api = "count_tokens"
        self._json(200, {"input_tokens": max(1, len(json.dumps(recorded.body)) // 4)})

    def on_chat(self, recorded: Recorded) -> None:
        body = _as_dict(recorded.body)
        turn = self._turn_for(recorded, "chat", chat_turn(body), body)
        model = str(body.get("model", "gpt-fake"))
        assert recorded.usage is not None
        if body.get("stream"):
            with_usage = bool((body.get("stream_options") or {}).get("include_usage"))
            chunks = chat_chunks(turn, model, recorded.usage, with_usage)
            self._sse((("", c) for c in chunks), named=False, done_marker=True)
        else:
            self._json(200, chat_completion(turn, model, recorded.usage))

    def on_responses(self, recorded: Recorded) -> None:
        body = _as_dict(recorded.body)
        turn = self._turn_for(recorded, "responses", responses_turn(body), body)
        model = str(body.get("model", "gpt-fake"))
        assert recorded.usage is not None
        if body.get("stream"):
            self._sse(response_events(turn, model, recorded.usage), named=True)
        else:
            self._json(200, response_object(turn, model, recorded.usage))

    def on_models(self, recorded: Recorded) -> None:
        recorded.api = "models"
        names = ["claude-fake", "gpt-fake"]
        data = [
            {
                "id": n,
                "object": "model",
                "type": "model",
                "display_name": n,
                "created": 0,
                "owned_by": "fake",
            }
            for n in names
        ]
        self._json(
            200,
            {
                "object": "list",
                "data": data,
                "has_more": False,
                "first_id": names[0],
                "last_id": names[-1],
            },
        )

    def _other(self, path: str, recorded: Recorded) -> None:
        recorded.api = "other"
        if path.startswith("/api/event_logging/"):
            self._json(200, {})
            return
        error = {"type": "not_found_error", "message": f"the fake LLM has no {self.command} {path}"}
        self._json(404, {"type": "error", "error": error})

    # --- control (never recorded) ---

    def _control(self, action: str, raw: bytes) -> None:
        if action == "script" and self.command == "PUT":
            spec = _as_dict(_json_or_text(raw))
            turns = [Turn.from_json(t) for t in spec.get("turns", [])]
            self.fake.set_script(
                turns, side_text=spec.get("side_text", "ok"), usage=spec.get("usage")
            )
            self._json(200, {"turns": len(turns)})
        elif action == "requests" and self.command == "GET":
            self._json(200, {"requests": [asdict(r) for r in self.fake.requests]})
        elif action == "requests" and self.command == "DELETE":
            self.fake.clear()
            self._json(200, {})
        elif action == "health":
            self._json(200, {"status": "ok"})
        else:
            self._json(404, {"error": f"no control {self.command} {action}"})

    # --- writing answers ---

    def _json(self, status: int, value: Any) -> None:
        data = json.dumps(value).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.send_header("request-id", _id("req"))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def _sse(
        self, events: Iterator[tuple[str, Any]], *, named: bool, done_marker: bool = False
    ) -> None:
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("cache-control", "no-cache")
        self.send_header("connection", "close")
        self.end_headers()
        self.close_connection = True
        for name, data in events:
            prefix = f"event: {name}\n" if named else ""
            self.wfile.write(f"{prefix}data: {json.dumps(data)}\n\n".encode())
            self.wfile.flush()
        if done_marker:
            self.wfile.write(b"data: [DONE]\n\n")
        self.wfile.flush()


def _normalize(path: str) -> str:
    """The route's own path, without a trailing slash. The version prefix is required, as
    the real APIs require it: a client whose base URL misses `/v1` fails here too."""
    return path.rstrip("/") or "/"


ROUTES = {
    ("POST", "/v1/messages"): _Handler.on_messages,
    ("POST", "/v1/messages/count_tokens"): _Handler.on_count_tokens,
    ("POST", "/v1/chat/completions"): _Handler.on_chat,
    ("POST", "/v1/responses"): _Handler.on_responses,
    ("GET", "/v1/models"): _Handler.on_models,
}


def _json_or_text(raw: bytes) -> Any:
    if not raw:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return raw.decode("utf-8", errors="replace")


def _as_dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def main() -> None:
    parser = argparse.ArgumentParser(description="A scripted fake LLM server (for tests).")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--script", help="a JSON file: {turns, side_text, usage}")
    args = parser.parse_args()
    fake = FakeLLM(host=args.host, port=args.port)
    if args.script:
        with open(args.script, encoding="utf-8") as file:
            spec = json.load(file)
        turns = [Turn.from_json(t) for t in spec.get("turns", [])]
        fake.set_script(turns, side_text=spec.get("side_text", "ok"), usage=spec.get("usage"))
    print(f"fake LLM listening on {args.host}:{fake.port}", flush=True)
    fake.serve_forever()


if __name__ == "__main__":
    main()
