"""parse_outcome: each row of the table in docs/execution.md."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

from tower.configs.defaults import shipped_defaults
from tower.configs.models import Engine
from tower.configs.parse import parse_engine
from tower.execution.bundle import WorkerOutput
from tower.execution.outcome import parse_outcome
from tower.execution.runner import RunOutcome
from tower.execution.slots import ContainerShape
from tower.execution.spec import JobSpec

SHIPPED = {name: content for kind, name, content in shipped_defaults() if kind == "engine"}
LIMIT = 1000
SPEC = JobSpec(
    job_id="agent-0123456789ab",
    argv=("claude", "-p"),
    env={},
    cwd="/workspace",
    files=(),
    stdin=None,
    prompt_file="/tmp/parpaing/prompt.md",
    pre_hook=None,
    post_hook=None,
    dry_run=False,
    timeout_seconds=900,
    output_limit=LIMIT,
    output_format="json",
    shape=ContainerShape("parpaing-worker:latest", "1g", 1.0, 256, "", "net"),
)
CLAUDE_JSON = {
    "type": "result",
    "subtype": "success",
    "is_error": False,
    "result": "All tests pass.",
    "total_cost_usd": 0.0123,
    "usage": {"input_tokens": 120, "output_tokens": 45, "cache_read_input_tokens": 7},
}


def engine(name: str) -> Engine:
    return parse_engine(name, SHIPPED[name])


def worker_output(stdout: bytes = b"", stderr: str = "", **result: Any) -> WorkerOutput:
    fields = {
        "version": 1,
        "exit_code": 0,
        "phase": "engine",
        "argv": ["claude", "-p"],
        "files": [],
        "stdout_bytes": len(stdout),
        "stderr_tail": stderr,
        "duration_ms": 5,
        "error": None,
    }
    return WorkerOutput(fields | result, stdout, stderr)


def outcome(
    output: WorkerOutput | None,
    *,
    engine_name: str = "claude-code",
    spec: JobSpec = SPEC,
    oom: bool = False,
    timed_out: bool = False,
) -> RunOutcome:
    return parse_outcome(
        output,
        engine=engine(engine_name),
        spec=spec,
        oom_killed=oom,
        timed_out=timed_out,
        max_result_size=LIMIT,
    )


# --- the container's fate ------------------------------------------------------------------


def test_oom_killed_is_failed_oom_whatever_the_worker_wrote() -> None:
    got = outcome(worker_output(b"fine", exit_code=0), oom=True)
    assert (got.succeeded, got.failure_reason) == (False, "oom")
    assert got.error is not None and "1g" in got.error


def test_oom_before_any_result() -> None:
    got = outcome(None, oom=True)
    assert (got.succeeded, got.failure_reason, got.exit_code) == (False, "oom", None)


def test_timed_out_is_failed_timeout() -> None:
    got = outcome(None, timed_out=True)
    assert (got.succeeded, got.failure_reason) == (False, "timeout")
    assert got.error == "timed out after 900 s"


def test_no_output_at_all_is_an_error() -> None:
    got = outcome(None)
    assert (got.succeeded, got.failure_reason) == (False, "error")
    assert got.error is not None and "without reporting a result" in got.error


def test_a_worker_that_never_wrote_result_json_is_an_error_with_its_stderr() -> None:
    got = outcome(WorkerOutput(None, b"", "Traceback: boom\n"))
    assert (got.succeeded, got.failure_reason) == (False, "error")
    assert got.error is not None and "Traceback: boom" in got.error


def test_the_workers_own_error_fails_the_job() -> None:
    problem = "the prompt is 200000 bytes, too long for one command-line argument"
    got = outcome(worker_output(phase="worker", exit_code=None, error=problem))
    assert (got.succeeded, got.failure_reason) == (False, "error")
    assert got.error == f"worker: {problem}"


# --- size -----------------------------------------------------------------------------------


def test_a_result_over_the_limit_fails_naming_both_sizes() -> None:
    got = outcome(worker_output(b"x" * (LIMIT + 1), stdout_bytes=123_456))
    assert (got.succeeded, got.failure_reason) == (False, "result_too_large")
    assert got.error is not None
    assert "123456 bytes" in got.error and f"({LIMIT} bytes)" in got.error
    assert got.result is None  # never silently cut


def test_a_result_of_exactly_the_limit_is_kept() -> None:
    text = "y" * LIMIT
    got = outcome(worker_output(text.encode()), engine_name="aider")
    assert (got.succeeded, got.result) == (True, text)


# --- dry run ----------------------------------------------------------------------------------


def test_dry_run_completes_with_the_argv_and_files() -> None:
    files = ["/tmp/parpaing/prompt.md"]
    got = outcome(worker_output(phase="dry_run", argv=["claude", "-p"], files=files))
    assert (got.succeeded, got.exit_code, got.failure_reason) == (True, 0, None)
    assert got.result is not None
    assert json.loads(got.result) == {"dry_run": True, "argv": ["claude", "-p"], "files": files}


# --- exit codes -----------------------------------------------------------------------------


def test_a_non_zero_exit_fails_with_the_stderr_tail() -> None:
    got = outcome(worker_output(b"partial", "API error: 401\n", exit_code=2))
    assert (got.succeeded, got.exit_code, got.failure_reason) == (False, 2, "error")
    assert got.error == "engine exited with code 2: API error: 401"


def test_a_non_zero_exit_without_stderr_fails_with_the_stdout_tail() -> None:
    got = outcome(worker_output(b"usage: claude [options]\n", exit_code=1))
    assert got.error == "engine exited with code 1: usage: claude [options]"


def test_a_failed_pre_hook_is_named() -> None:
    got = outcome(worker_output(b"", "git: not found\n", phase="pre_hook", exit_code=127))
    assert got.error == "pre-hook exited with code 127: git: not found"
    assert got.exit_code == 127


def test_a_long_error_keeps_its_end() -> None:
    stderr = "noise\n" * 5000 + "the real cause"
    got = outcome(worker_output(b"", stderr, exit_code=1))
    assert got.error is not None
    assert got.error.endswith("the real cause")
    assert len(got.error) < 5000


# --- success ----------------------------------------------------------------------------------


def test_a_json_engine_result_and_usage_come_from_its_json() -> None:
    got = outcome(worker_output(json.dumps(CLAUDE_JSON).encode()))
    assert (got.succeeded, got.exit_code, got.result) == (True, 0, "All tests pass.")
    assert got.usage == {"input_tokens": 120, "output_tokens": 45, "cost_usd": 0.0123}


def test_a_json_engine_reporting_is_error_fails() -> None:
    report = CLAUDE_JSON | {"is_error": True, "result": "Credit balance too low"}
    got = outcome(worker_output(json.dumps(report).encode()))
    assert (got.succeeded, got.failure_reason) == (False, "error")
    assert got.error == "Credit balance too low"
    assert got.usage is not None


def test_stream_json_takes_the_final_result_line() -> None:
    events = [
        {"type": "system", "subtype": "init"},
        {"type": "assistant", "message": {"content": [{"type": "text", "text": "working"}]}},
        CLAUDE_JSON,
    ]
    stdout = "\n".join(json.dumps(event) for event in events).encode() + b"\n"
    got = outcome(worker_output(stdout), spec=replace(SPEC, output_format="stream-json"))
    assert (got.succeeded, got.result) == (True, "All tests pass.")
    assert got.usage is not None and got.usage["output_tokens"] == 45


def test_a_text_engine_result_is_its_stdout() -> None:
    got = outcome(worker_output("Applied edit to main.py ✓\n".encode()), engine_name="aider")
    assert (got.succeeded, got.result, got.usage) == (True, "Applied edit to main.py ✓\n", None)


def test_a_json_engine_asked_for_text_returns_its_stdout() -> None:
    got = outcome(worker_output(b"plain answer\n"), spec=replace(SPEC, output_format="text"))
    assert (got.succeeded, got.result) == (True, "plain answer\n")


def test_a_json_engine_printing_no_json_still_completes_with_its_stdout() -> None:
    got = outcome(worker_output(b"not json at all"))
    assert (got.succeeded, got.result, got.usage) == (True, "not json at all", None)


def test_gemini_json_names_its_text_response() -> None:
    stdout = json.dumps({"response": "Done.", "stats": {}}).encode()
    got = outcome(worker_output(stdout), engine_name="gemini")
    assert (got.succeeded, got.result) == (True, "Done.")


# Codex `exec --json` and OpenCode `run --format json`, as the real CLIs printed them
# against the fake LLM (ids shortened).
CODEX_EVENTS = [
    {"type": "thread.started", "thread_id": "t1"},
    {"type": "turn.started"},
    {"type": "item.completed", "item": {"id": "item_0", "type": "error", "message": "fallback"}},
    {"type": "item.completed", "item": {"id": "item_1", "type": "agent_message", "text": "one"}},
    {
        "type": "turn.completed",
        "usage": {
            "input_tokens": 120,
            "cached_input_tokens": 0,
            "output_tokens": 30,
            "reasoning_output_tokens": 0,
        },
    },
    {"type": "item.completed", "item": {"id": "item_2", "type": "agent_message", "text": "Done."}},
    {"type": "turn.completed", "usage": {"input_tokens": 200, "output_tokens": 10}},
]
OPENCODE_EVENTS = [
    {"type": "step_start", "part": {"type": "step-start"}},
    {"type": "text", "part": {"type": "text", "text": "PONG from fake"}},
    {
        "type": "step_finish",
        "part": {
            "type": "step-finish",
            "reason": "stop",
            "cost": 0.00081,
            "tokens": {"total": 150, "input": 120, "output": 30},
        },
    },
]


def jsonl(events: list[dict[str, Any]]) -> bytes:
    return "".join(json.dumps(event) + "\n" for event in events).encode()


def test_codex_result_is_its_last_agent_message_and_usage_the_sum_of_its_turns() -> None:
    got = outcome(worker_output(jsonl(CODEX_EVENTS)), engine_name="codex")
    assert (got.succeeded, got.result) == (True, "Done.")
    assert got.usage == {"input_tokens": 320, "output_tokens": 40, "cost_usd": None}


def test_opencode_result_and_usage_with_its_cost() -> None:
    got = outcome(worker_output(jsonl(OPENCODE_EVENTS)), engine_name="opencode")
    assert (got.succeeded, got.result) == (True, "PONG from fake")
    assert got.usage == {"input_tokens": 120, "output_tokens": 30, "cost_usd": 0.00081}


def test_a_jsonl_engine_asked_for_text_keeps_its_stdout() -> None:
    got = outcome(
        worker_output(b"plain\n"), engine_name="codex", spec=replace(SPEC, output_format="text")
    )
    assert (got.succeeded, got.result, got.usage) == (True, "plain\n", None)


def test_a_jsonl_engine_without_known_events_completes_with_its_stdout() -> None:
    stdout = jsonl([{"type": "something-new"}])
    got = outcome(worker_output(stdout), engine_name="opencode")
    assert (got.succeeded, got.result, got.usage) == (True, stdout.decode(), None)


AIDER_OUTPUT = """Aider v0.86.2
Model: openai/gpt-fake with whole edit format

PONG from fake

Tokens: 2.3k sent, 30 received. Cost: $0.0012 message, $0.0012 session.
Applied edit to main.py
Tokens: 1,200 sent, 1.5k received. Cost: $0.0030 message, $0.0042 session.
"""


def test_aider_usage_sums_its_token_lines_and_takes_the_session_cost() -> None:
    got = outcome(worker_output(AIDER_OUTPUT.encode()), engine_name="aider")
    assert (got.succeeded, got.result) == (True, AIDER_OUTPUT)
    assert got.usage == {"input_tokens": 3500, "output_tokens": 1530, "cost_usd": 0.0042}


def test_aider_without_a_cost_line_still_reports_tokens() -> None:
    got = outcome(worker_output(b"Tokens: 120 sent, 30 received.\n"), engine_name="aider")
    assert got.usage == {"input_tokens": 120, "output_tokens": 30, "cost_usd": None}


def test_gemini_usage_sums_the_tokens_of_its_models() -> None:
    main = {"tokens": {"input": 120, "prompt": 120, "candidates": 30, "total": 150}}
    router = {"tokens": {"prompt": 10, "candidates": 2}}
    report = {"response": "PONG", "stats": {"models": {"gemini-2.5-flash": main, "lite": router}}}
    got = outcome(worker_output(json.dumps(report).encode()), engine_name="gemini")
    assert (got.succeeded, got.result) == (True, "PONG")
    assert got.usage == {"input_tokens": 130, "output_tokens": 32, "cost_usd": None}
