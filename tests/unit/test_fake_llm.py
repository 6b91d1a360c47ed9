"""The scripted fake LLM speaks each API the way its clients parse it, and records all."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.support.fake_llm import FakeLLM, Turn, text, tool

BASH = tool("Bash", command="echo hi > /workspace/f.txt")


@pytest.fixture
def fake() -> Iterator[FakeLLM]:
    with FakeLLM([BASH, text("finished")]) as server:
        yield server


def post(fake: FakeLLM, path: str, body: dict[str, Any], **headers: str) -> httpx.Response:
    return httpx.post(fake.url + path, json=body, headers=headers, timeout=10)


def sse(response: httpx.Response) -> list[tuple[str, Any]]:
    """(event name, data) pairs of an SSE body; data `[DONE]` stays a string."""
    events = []
    for block in response.text.strip().split("\n\n"):
        name, data = "", ""
        for line in block.splitlines():
            if line.startswith("event: "):
                name = line[len("event: ") :]
            elif line.startswith("data: "):
                data = line[len("data: ") :]
        events.append((name, data if data == "[DONE]" else json.loads(data)))
    return events


def anthropic_request(history: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    tools = [{"name": "Bash", "input_schema": {"type": "object"}}]
    return {"model": "claude-x", "messages": history, "tools": tools, "max_tokens": 10, **extra}


USER = {"role": "user", "content": "go"}
ASSISTANT = {"role": "assistant", "content": "…"}


def test_messages_stream_is_the_event_sequence_the_sdk_expects(fake: FakeLLM) -> None:
    response = post(fake, "/v1/messages?beta=true", anthropic_request([USER], stream=True))
    assert response.headers["content-type"].startswith("text/event-stream")
    events = sse(response)
    names = [name for name, _ in events]
    assert names == [
        "message_start",
        "content_block_start",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    assert all(data["type"] == name for name, data in events)
    block = events[1][1]["content_block"]
    assert block["type"] == "tool_use" and block["name"] == "Bash"
    arguments = json.loads(events[2][1]["delta"]["partial_json"])
    assert arguments == {"command": "echo hi > /workspace/f.txt"}
    assert events[4][1]["delta"]["stop_reason"] == "tool_use"
    assert events[4][1]["usage"]["output_tokens"] == 30
    assert events[0][1]["message"]["usage"]["input_tokens"] == 120


def test_the_turn_follows_the_conversation_not_a_counter(fake: FakeLLM) -> None:
    first = post(fake, "/v1/messages", anthropic_request([USER])).json()
    again = post(fake, "/v1/messages", anthropic_request([USER])).json()
    second = post(fake, "/v1/messages", anthropic_request([USER, ASSISTANT, USER])).json()
    beyond = post(fake, "/v1/messages", anthropic_request([USER, ASSISTANT] * 3 + [USER])).json()
    assert first["content"][0]["type"] == "tool_use"
    assert again["content"][0]["type"] == "tool_use"  # a retry gets the same answer
    assert second["content"] == [{"type": "text", "text": "finished"}]
    assert second["stop_reason"] == "end_turn"
    assert beyond["content"] == [{"type": "text", "text": "finished"}]
    assert [r.turn for r in fake.model_calls()] == [0, 0, 1, 3]


def test_a_request_without_tools_is_a_side_call_that_leaves_the_script_alone(
    fake: FakeLLM,
) -> None:
    side = post(fake, "/v1/messages", {"model": "haiku", "messages": [USER]}).json()
    assert side["content"] == [{"type": "text", "text": "ok"}]
    main = post(fake, "/v1/messages", anthropic_request([USER])).json()
    assert main["content"][0]["type"] == "tool_use"
    assert [(r.side, r.turn) for r in fake.model_calls()] == [(True, None), (False, 0)]


def test_without_side_text_every_request_follows_the_script() -> None:
    with FakeLLM([text("one"), text("two")], side_text=None) as fake:
        answer = post(fake, "/v1/chat/completions", {"messages": [USER, ASSISTANT, USER]})
    assert answer.json()["choices"][0]["message"]["content"] == "two"


def test_every_request_is_recorded_with_headers_and_body(fake: FakeLLM) -> None:
    post(fake, "/v1/messages", anthropic_request([USER]), **{"x-api-key": "k-1"})
    httpx.get(fake.url + "/somewhere/else", timeout=5)
    post(fake, "/api/event_logging/batch", {"events": []})
    first, other, logging = fake.requests
    assert first.header("x-api-key") == "k-1"
    assert first.body["model"] == "claude-x"
    assert first.usage == {"input_tokens": 120, "output_tokens": 30}
    assert (other.method, other.path, other.api) == ("GET", "/somewhere/else", "other")
    assert logging.api == "other"


def test_unknown_paths_are_404_and_event_logging_is_accepted(fake: FakeLLM) -> None:
    assert httpx.get(fake.url + "/nope", timeout=5).status_code == 404
    assert post(fake, "/api/event_logging/batch", {}).status_code == 200


def test_count_tokens_and_models(fake: FakeLLM) -> None:
    count = post(fake, "/v1/messages/count_tokens", anthropic_request([USER])).json()
    assert count["input_tokens"] > 0
    models = httpx.get(fake.url + "/v1/models", timeout=5).json()
    assert {m["id"] for m in models["data"]} >= {"claude-fake", "gpt-fake"}


def test_chat_completions_stream_tool_call_then_usage_chunk(fake: FakeLLM) -> None:
    body = {
        "model": "gpt-x",
        "messages": [USER],
        "tools": [{"type": "function", "function": {"name": "Bash"}}],
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    events = sse(post(fake, "/v1/chat/completions", body))
    assert events[-1] == ("", "[DONE]")
    chunks = [data for _, data in events[:-1]]
    calls = [
        c for chunk in chunks for ch in chunk["choices"] for c in ch["delta"].get("tool_calls", [])
    ]
    assert calls[0]["function"]["name"] == "Bash"
    assert json.loads(calls[0]["function"]["arguments"]) == {
        "command": "echo hi > /workspace/f.txt"
    }
    finishes = [ch["finish_reason"] for chunk in chunks for ch in chunk["choices"]]
    assert finishes[-1] == "tool_calls"
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"] == {
        "prompt_tokens": 120,
        "completion_tokens": 30,
        "total_tokens": 150,
    }


def test_chat_completions_plain_answer(fake: FakeLLM) -> None:
    body = {"model": "gpt-x", "messages": [USER, ASSISTANT, USER], "tools": [{"type": "function"}]}
    assert post(fake, "/chat/completions", body).status_code == 404  # as the real API: /v1
    answer = post(fake, "/v1/chat/completions/", body).json()
    assert answer["choices"][0]["message"] == {"role": "assistant", "content": "finished"}
    assert answer["choices"][0]["finish_reason"] == "stop"
    assert answer["usage"]["completion_tokens"] == 30


def test_responses_stream_ends_with_the_completed_response(fake: FakeLLM) -> None:
    body = {"model": "gpt-x", "input": [USER], "tools": [{"type": "function"}], "stream": True}
    events = sse(post(fake, "/v1/responses", body))
    names = [name for name, _ in events]
    assert names[0] == "response.created" and names[-1] == "response.completed"
    assert "response.output_item.done" in names
    final = events[-1][1]["response"]
    assert final["output"][0]["type"] == "function_call"
    assert final["output"][0]["name"] == "Bash"
    assert final["usage"]["input_tokens"] == 120


def test_responses_turn_counts_runs_of_assistant_items(fake: FakeLLM) -> None:
    call = {"type": "function_call", "call_id": "c1", "name": "Bash", "arguments": "{}"}
    output = {"type": "function_call_output", "call_id": "c1", "output": "ok"}
    body = {"model": "gpt-x", "input": [USER, {"type": "reasoning"}, call, output], "tools": [{}]}
    answer = post(fake, "/v1/responses", body).json()
    assert answer["output"][0]["content"][0]["text"] == "finished"
    assert fake.model_calls()[0].turn == 1


def test_scripted_usage_per_turn() -> None:
    turns = [Turn(text="x", usage={"input_tokens": 7, "output_tokens": 3})]
    with FakeLLM(turns) as fake:
        answer = post(fake, "/v1/messages", anthropic_request([USER])).json()
    assert answer["usage"]["input_tokens"] == 7 and answer["usage"]["output_tokens"] == 3


def test_control_api_scripts_and_reads_the_record(fake: FakeLLM) -> None:
    script = {"turns": [{"text": "from afar"}], "usage": {"input_tokens": 5, "output_tokens": 2}}
    assert httpx.put(fake.url + "/_fake/script", json=script, timeout=5).status_code == 200
    answer = post(fake, "/v1/messages", anthropic_request([USER])).json()
    assert answer["content"] == [{"type": "text", "text": "from afar"}]
    record = httpx.get(fake.url + "/_fake/requests", timeout=5).json()["requests"]
    assert [r["path"] for r in record] == ["/v1/messages"]  # control calls are not recorded
    assert record[0]["usage"] == {"input_tokens": 5, "output_tokens": 2}
    httpx.delete(fake.url + "/_fake/requests", timeout=5)
    assert fake.requests == []


def test_tool_result_placeholder_shows_what_the_tool_returned() -> None:
    turns = [BASH, text("the file says: {tool_result}")]
    result = {
        "type": "tool_result",
        "tool_use_id": "t1",
        "content": [{"type": "text", "text": "hi\n"}],
    }
    history = [USER, ASSISTANT, {"role": "user", "content": [result]}]
    chat_history = [USER, ASSISTANT, {"role": "tool", "tool_call_id": "c", "content": "from chat"}]
    with FakeLLM(turns) as fake:
        answer = post(fake, "/v1/messages", anthropic_request(history)).json()
        chat = post(fake, "/v1/chat/completions", {"messages": chat_history, "tools": [{}]}).json()
    assert answer["content"] == [{"type": "text", "text": "the file says: hi"}]
    assert chat["choices"][0]["message"]["content"] == "the file says: from chat"


def test_gemini_generate_content_streamed_and_not() -> None:
    tools = [{"functionDeclarations": [{"name": "run_shell_command"}]}]
    first = {"contents": [{"role": "user", "parts": [{"text": "go"}]}], "tools": tools}
    with FakeLLM([tool("run_shell_command", command="ls"), text("listed")]) as fake:
        path = "/v1beta/models/gemini-x:streamGenerateContent?alt=sse"
        (event,) = sse(post(fake, path, first))
        history = first["contents"] + [{"role": "model", "parts": [{"text": "…"}]}]
        second = post(
            fake, "/v1beta/models/gemini-x:generateContent", {**first, "contents": history}
        )
        count = post(fake, "/v1beta/models/gemini-x:countTokens", first)
    call = event[1]["candidates"][0]["content"]["parts"][0]["functionCall"]
    assert call == {"name": "run_shell_command", "args": {"command": "ls"}}
    assert event[1]["usageMetadata"]["promptTokenCount"] == 120
    assert second.json()["candidates"][0]["content"]["parts"] == [{"text": "listed"}]
    assert count.json()["totalTokens"] > 0
