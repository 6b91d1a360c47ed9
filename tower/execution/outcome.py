"""From what a worker left behind (and how its container ended) to the job's outcome.

Pure; the rules are the table in docs/execution.md. The container's fate decides
first (out of memory, timed out), then an output refused at the cap (tower's copy or
the worker's own refusal), then the worker's own report, then the size of the
result, then the exit code, then, for JSON engines, what the engine itself reported.
"""

from __future__ import annotations

import json
import math
from typing import Any

from tower.configs.models import Engine
from tower.execution import protocol
from tower.execution.bundle import WorkerOutput
from tower.execution.engine_output import Usage, read_aider, read_json, read_jsonl
from tower.execution.runner import FailureReason, RunOutcome
from tower.execution.spec import JobSpec

ERROR_TAIL = 4096


def parse_outcome(
    output: WorkerOutput | None,
    *,
    engine: Engine,
    spec: JobSpec,
    oom_killed: bool,
    timed_out: bool,
    max_result_size: int,
) -> RunOutcome:
    result = output.result if output is not None else None
    if oom_killed:
        return _failed(f"out of memory (limit {spec.shape.memory})", "oom", result)
    if timed_out:
        return _failed(f"timed out after {spec.timeout_seconds} s", "timeout", result)
    if output is not None and output.too_large:
        return _failed(f"result too large: {output.too_large}", "result_too_large", None)
    if output is None or result is None:
        return _failed(_unfinished(output), "error", None)
    if result.get("reason") == protocol.RESULT_TOO_LARGE:
        return _failed(f"result too large: {result.get('error')}", "result_too_large", result)
    if result.get("error"):
        return _failed(f"worker: {result['error']}", "error", result)
    size = _int(result.get("stdout_bytes"), len(output.stdout))
    if size > max_result_size:
        message = f"result is {size} bytes, over MAX_RESULT_SIZE ({max_result_size} bytes)"
        return _failed(message, "result_too_large", result)
    if result.get("phase") == "dry_run":
        return _dry_run(result)
    code = _int(result.get("exit_code"), -1)
    if code != 0:
        return _failed(_exit_error(output, result, code), "error", result)
    return _completed(output.stdout, engine, spec)


def _completed(stdout: bytes, engine: Engine, spec: JobSpec) -> RunOutcome:
    """The engine's final text is the result (its whole output when it reports none, or
    when the caller asked for text); its usage goes with it whatever the format."""
    text = stdout.decode("utf-8", errors="replace")
    if engine.output == "text":
        return RunOutcome(True, 0, text, usage=_storable(read_aider(text)))
    report = read_json(text) if engine.output == "json" else read_jsonl(text)
    if report is None:
        return RunOutcome(True, 0, text)
    usage = _storable(report.usage)
    if report.is_error:
        message = report.final_text or "the engine reported an error"
        return RunOutcome(False, 0, None, message, "error", usage)
    if spec.output_format == "text" or report.final_text is None:
        return RunOutcome(True, 0, text, usage=usage)
    return RunOutcome(True, 0, report.final_text, usage=usage)


def _storable(usage: Usage | None) -> Usage | None:
    """The usage without any figure jsonb would refuse (NaN, ±Infinity): such a figure is
    one the engine did not give, never a reason to lose the result."""
    if usage is None:
        return None
    kept = {key: None if _non_finite(value) else value for key, value in usage.items()}
    return kept if any(value is not None for value in kept.values()) else None


def _non_finite(value: Any) -> bool:
    return isinstance(value, float) and not math.isfinite(value)


def _dry_run(result: dict[str, Any]) -> RunOutcome:
    report = {"dry_run": True, "argv": result.get("argv", []), "files": result.get("files", [])}
    return RunOutcome(True, 0, json.dumps(report, ensure_ascii=False))


def _exit_error(output: WorkerOutput, result: dict[str, Any], code: int) -> str:
    phase = str(result.get("phase") or "engine")
    detail = (output.stderr or str(result.get("stderr_tail") or "")).strip()
    if not detail:
        detail = output.stdout[-ERROR_TAIL:].decode("utf-8", errors="replace").strip()
    headline = f"{phase.replace('_', '-')} exited with code {code}"
    return f"{headline}: {detail[-ERROR_TAIL:]}" if detail else headline


def _unfinished(output: WorkerOutput | None) -> str:
    message = "the worker ended without reporting a result"
    tail = output.stderr.strip()[-ERROR_TAIL:] if output is not None else ""
    return f"{message}: {tail}" if tail else message


def _failed(message: str, reason: FailureReason, result: dict[str, Any] | None) -> RunOutcome:
    exit_code = result.get("exit_code") if result is not None else None
    code = exit_code if isinstance(exit_code, int) else None
    return RunOutcome(False, code, None, message, reason)


def _int(value: Any, default: int) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else default
