"""Job rows as API records."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from tower.jobs.schemas import JobRecord, JobSummary

# Request fields echoed in the full record, with their value when the request lacks them.
ECHOED: dict[str, Any] = {
    "dry_run": False,
    "webhook_url": None,
    "model": None,
    "output_format": "json",
    "max_turns": None,
    "max_budget_usd": None,
    "inputs": [],
    "repo": None,
    "output": None,
}


def summary(row: Mapping[str, Any]) -> JobSummary:
    return JobSummary.model_validate(dict(row))


def record(row: Mapping[str, Any]) -> JobRecord:
    fields = {key: value for key, value in row.items() if key != "echo"}
    echo = row["echo"] or {}
    fields.update({name: echo.get(name, default) for name, default in ECHOED.items()})
    artifacts = row.get("artifacts")
    fields["changes"] = artifacts.get("changes") if isinstance(artifacts, dict) else None
    fields["egress"] = _egress(echo.get("egress"), fields.pop("egress_usage", None))
    return JobRecord.model_validate(fields)


def _egress(stored: Any, usage: Any) -> dict[str, Any] | None:
    """The job's allow-list (stored in its request at submit) and what its requests
    through the egress proxy came to (none yet: zeros)."""
    if not isinstance(stored, dict) or not stored.get("allow"):
        return None
    return {"allow": stored["allow"], **(usage if isinstance(usage, dict) else {})}
