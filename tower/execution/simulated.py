"""A runner that executes a tiny script instead of an agent, to exercise the queue.

It is selected with TOWER_RUNNER=simulated (tests and benchmarks). The job's prompt is
read one command a line:
    sleep <seconds>     wait, as a long-running agent would
    print <text>        append a line to the result, and write it to the job's stdout
    warn <text>         write a line to the job's stderr (not part of the result)
    exit <code>         end now; a non-zero code fails the job with the printed text
    fail <reason>       end as failed with that failure_reason (timeout, oom, ...)
    usage <in> <out> <cost>   report that token usage and cost (USD) when the job ends
Other lines are ignored. With SIMULATED_RUN_LOG set, every run appends
"<job_id> <attempt> <pid>" to that file, so tests can count executions across processes.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any, cast

from tower.execution.runner import ClaimedJob, FailureReason, Output, RunnerHealth, RunOutcome


class SimulatedRunner:
    def __init__(self, run_log: str = "") -> None:
        self._run_log = run_log

    async def health(self) -> RunnerHealth:
        return RunnerHealth()  # no Docker, no gateway

    async def run(self, job: ClaimedJob, output: Output) -> RunOutcome:
        self._record(job)
        printed: list[str] = []
        usage: dict[str, Any] | None = None
        for line in str(job.request.get("prompt", "")).splitlines():
            verb, _, argument = line.strip().partition(" ")
            if verb == "sleep":
                await asyncio.sleep(float(argument or 0))
            elif verb == "print":
                printed.append(argument)
                output.write("stdout", f"{argument}\n".encode())
            elif verb == "warn":
                output.write("stderr", f"{argument}\n".encode())
            elif verb == "usage":
                usage = _usage(argument)
            elif verb == "exit":
                return _exit(int(argument or 0), printed, usage)
            elif verb == "fail":
                reason = cast(FailureReason, argument or "error")
                return RunOutcome(False, None, None, "\n".join(printed), reason, usage)
        return _exit(0, printed, usage)

    async def close(self) -> None:
        return None

    def _record(self, job: ClaimedJob) -> None:
        if not self._run_log:
            return
        line = f"{job.job_id} {job.attempt} {os.getpid()}\n".encode()
        descriptor = os.open(self._run_log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(descriptor, line)  # one write with O_APPEND: lines never interleave
        finally:
            os.close(descriptor)


def _usage(argument: str) -> dict[str, Any]:
    tokens_in, tokens_out, cost = argument.split()
    return {
        "input_tokens": int(tokens_in),
        "output_tokens": int(tokens_out),
        "cost_usd": float(cost),
    }


def _exit(code: int, printed: list[str], usage: dict[str, Any] | None = None) -> RunOutcome:
    text = "\n".join(printed)
    if code == 0:
        return RunOutcome(True, 0, text, usage=usage)
    return RunOutcome(False, code, None, text or f"exited with code {code}", "error", usage)
