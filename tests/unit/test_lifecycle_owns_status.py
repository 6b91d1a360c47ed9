"""A job's status changes only through tower/db/lifecycle.py: no other module of tower
holds a statement that writes jobs.status (or inserts a job).

Two looks: the source text of every module (SQL built in a function is a literal there),
and every string constant of every imported module (SQL assembled from fragments at
import, as RELEASE and REAP are, shows whole only there)."""

from __future__ import annotations

import importlib
import pkgutil
import re
from pathlib import Path

import tower

ROOT = Path(tower.__file__).resolve().parent
LIFECYCLE = "tower.db.lifecycle"

# An UPDATE of jobs whose SET list (up to its WHERE, FROM or RETURNING) assigns status.
WRITES_STATUS = re.compile(
    r"UPDATE\s+jobs\b(?:\s+AS\s+\w+)?\s+SET\b"
    r"(?:(?!\b(?:WHERE|FROM|RETURNING)\b).)*?\bstatus\s*=",
    re.IGNORECASE | re.DOTALL,
)
INSERTS_JOB = re.compile(r"INSERT\s+INTO\s+jobs\b", re.IGNORECASE)


def status_writes(text: str) -> int:
    return len(WRITES_STATUS.findall(text)) + len(INSERTS_JOB.findall(text))


def tower_modules() -> list[str]:
    names = [info.name for info in pkgutil.walk_packages([str(ROOT)], "tower.")]
    skipped = ("tower._shipped", "tower.ui")
    return [n for n in names if not n.startswith(skipped) and not n.endswith("__main__")]


def constants(module_name: str) -> list[str]:
    module = importlib.import_module(module_name)
    return [value for value in vars(module).values() if isinstance(value, str)]


def test_no_module_source_but_the_lifecycle_writes_a_jobs_status() -> None:
    offenders = [
        str(path.relative_to(ROOT))
        for path in sorted(ROOT.rglob("*.py"))
        if path != ROOT / "db" / "lifecycle.py" and status_writes(path.read_text())
    ]
    assert offenders == []


def test_no_module_constant_but_the_lifecycle_writes_a_jobs_status() -> None:
    modules = tower_modules()
    assert len(modules) > 80  # the walk really saw the package
    offenders = [
        name
        for name in modules
        if name != LIFECYCLE and any(status_writes(text) for text in constants(name))
    ]
    assert offenders == []


def test_the_check_finds_every_transition_in_the_lifecycle() -> None:
    # The positive control: the same check sees the statements where they are.
    from tower.db import lifecycle

    statements = {
        name: status_writes(getattr(lifecycle, name))
        for name in ("INSERT_JOB", "CLAIM", "FINISH", "RELEASE", "REAP", "CANCEL_JOB")
    }
    assert statements == dict.fromkeys(statements, 1)


def test_the_check_sees_a_status_write_in_any_shape() -> None:
    for sql in (
        "UPDATE jobs SET status = 'failed' WHERE job_id = $1",
        "update jobs\n  set lease_until = now(),\n      status = $3\n where true",
        "UPDATE jobs AS j SET attempt = 1, status='pending'",
        "INSERT INTO jobs (job_id) VALUES ($1)",
    ):
        assert status_writes(sql) == 1, sql
    assert not status_writes("UPDATE jobs SET lease_until = now() WHERE status = 'running'")
