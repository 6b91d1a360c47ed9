"""A turn's session state through the real worker (a process on this host): the first
turn's artifacts frame carries session.tar (its final workspace, .git included, and the
engine's state paths under $HOME); a second worker given it as a session input finds both
where they were, and refuses an entry outside workspace/ and home/."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

from tests.unit.test_worker import WorkerProcess, base_spec, shell, started, workers
from tests.unit.test_worker_inputs import entry, run_with, staged, tar_of
from tower.execution.docker.worker_stdout import WorkerStdout
from tower.execution.protocol import ARTIFACTS_SESSION, DONE_LINE

__all__ = ["workers"]  # the fixture

FIRST_TURN = """
mkdir -p .git "$HOME/.claude/projects/-workspace" "$HOME/.other"
echo ref > .git/HEAD
echo turn-1 > notes.md
echo '{"role":"user"}' > "$HOME/.claude/projects/-workspace/s.jsonl"
echo not-state > "$HOME/.other/x"
"""


def first_turn(tmp: Path, workers: list[WorkerProcess], limit: int = 1 << 30) -> dict[str, bytes]:
    """The members of the first turn's artifacts tar, by name."""
    worker = started(tmp, workers)
    spec = base_spec(
        argv=shell(FIRST_TURN), artifact_limit=limit, session_state=(".claude/projects",)
    )
    worker.start(spec)
    stdout = WorkerStdout(lambda _s, _d: None, 1 << 24, 2 << 30)
    assert stdout.feed(worker.finish().stdout + DONE_LINE)
    path = stdout.take_artifacts()
    assert path is not None
    with tarfile.open(path, "r:") as archive:
        return {m.name: archive.extractfile(m).read() for m in archive if m.isfile()}  # type: ignore[union-attr]


def test_the_second_turn_starts_from_the_first_turns_workspace_and_state(
    tmp_path: Path, workers: list[WorkerProcess]
) -> None:
    (tmp_path / "one").mkdir()
    members = first_turn(tmp_path / "one", workers)
    state = members[ARTIFACTS_SESSION]
    with tarfile.open(fileobj=io.BytesIO(state), mode="r:") as archive:
        names = set(archive.getnames())
    assert "workspace/.git/HEAD" in names and "workspace/notes.md" in names
    assert "home/.claude/projects/-workspace/s.jsonl" in names
    assert not any(name.startswith("home/.other") for name in names)

    (tmp_path / "two").mkdir()
    session = staged(tmp_path, "session", state, "session")
    script = "cat notes.md .git/HEAD $HOME/.claude/projects/-workspace/s.jsonl"
    finished = run_with(tmp_path / "two", workers, [session], base_spec(argv=shell(script)))
    assert finished.result["exit_code"] == 0, finished.result
    assert finished.file("stdout") == b'turn-1\nref\n{"role":"user"}\n'


def test_a_state_over_the_artifact_limit_is_not_kept(
    tmp_path: Path, workers: list[WorkerProcess]
) -> None:
    members = first_turn(tmp_path, workers, limit=100)
    assert ARTIFACTS_SESSION not in members


def test_a_session_entry_outside_workspace_and_home_is_refused(
    tmp_path: Path, workers: list[WorkerProcess]
) -> None:
    state = tar_of((entry("etc/passwd"), b"x"))
    session = staged(tmp_path, "session", state, "session")
    finished = run_with(tmp_path, workers, [session], base_spec(argv=shell("true")))
    assert finished.result["reason"] == "input"
    assert "neither workspace nor home" in finished.result["error"]


def test_a_home_entry_cannot_lead_out_of_home(tmp_path: Path, workers: list[WorkerProcess]) -> None:
    state = tar_of((entry("home/../../escape"), b"x"))
    session = staged(tmp_path, "session", state, "session")
    finished = run_with(tmp_path, workers, [session], base_spec(argv=shell("true")))
    assert finished.result["reason"] == "input"
    assert not (tmp_path / "escape").exists()
