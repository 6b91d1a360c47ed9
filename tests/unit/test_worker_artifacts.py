"""The worker's artifacts: what a job created or changed in /workspace comes back in the
artifacts frame (before the output frame), with a manifest; past the limit, files are
listed as omitted; for a repository job, a binary-safe diff that `git apply` takes on a
fresh clone of the commit. Real worker processes and real git, in temporary dirs."""

from __future__ import annotations

import io
import json
import os
import subprocess
import tarfile
from pathlib import Path
from typing import Any

from tests.unit.test_worker import WorkerProcess, base_spec, shell, started, workers

__all__ = ["workers"]  # the fixture
from tower.execution import protocol


def frame_of(stdout: bytes) -> tuple[int, dict[str, bytes]]:
    """The last artifacts frame's size and its members by name."""
    at = stdout.rfind(protocol.ARTIFACTS_MARK)
    assert at >= 0, stdout[-400:]
    end = stdout.index(b"\n", at)
    size = int(stdout[at + len(protocol.ARTIFACTS_MARK) : end])
    payload = stdout[end + 1 : end + 1 + size]
    assert stdout[end + 1 + size :].startswith(protocol.OUTPUT_MARK)  # right before output
    members: dict[str, bytes] = {}
    if size:
        with tarfile.open(fileobj=io.BytesIO(payload), mode="r:") as tar:
            for member in tar:
                extracted = tar.extractfile(member)
                assert extracted is not None
                members[member.name] = extracted.read()
    return size, members


def run_in(tmp: Path, workers: list[WorkerProcess], script: str, **spec: Any) -> dict[str, bytes]:
    worker = started(tmp, workers)
    workspace = worker.root / "workspace"
    workspace.mkdir(exist_ok=True)
    prepare = spec.pop("prepare", None)
    if prepare is not None:
        prepare(workspace)
    worker.start(base_spec(argv=shell(script), **spec))
    finished = worker.finish()
    assert finished.result["exit_code"] == 0, finished.result
    return frame_of(finished.stdout)[1]


def manifest(members: dict[str, bytes]) -> dict[str, Any]:
    document = json.loads(members[protocol.ARTIFACTS_MANIFEST])
    assert isinstance(document, dict)
    return document


def existing(workspace: Path) -> None:
    (workspace / "kept.txt").write_bytes(b"left alone\n")
    (workspace / "changed.txt").write_bytes(b"before\n")
    (workspace / "gone.txt").write_bytes(b"deleted by the job\n")


CHANGES = """
printf 'after\\n' >> changed.txt
rm gone.txt
mkdir -p out/deep && head -c 300000 /dev/urandom > out/deep/blob.bin
printf '#!/bin/sh\\n' > out/run.sh && chmod 755 out/run.sh
ln -s kept.txt link
mkfifo pipe
"""


def test_new_and_changed_files_come_back_with_a_manifest(
    tmp_path: Path, workers: list[WorkerProcess]
) -> None:
    members = run_in(tmp_path, workers, CHANGES, artifact_limit=1 << 20, prepare=existing)

    workspace = tmp_path / "root" / "workspace"
    files = {entry["path"]: entry for entry in manifest(members)["files"]}
    assert sorted(files) == ["changed.txt", "out/deep/blob.bin", "out/run.sh"]
    for path, entry in files.items():
        data = (workspace / path).read_bytes()
        assert members[f"files/{path}"] == data
        assert entry["size"] == len(data)
        assert set(entry) == {"path", "size", "mode"}  # tower hashes what it stores
    assert files["out/run.sh"]["mode"] == 0o755
    document = manifest(members)
    assert document["deleted"] == ["gone.txt"]
    assert {(o["path"], o["why"]) for o in document["omitted"]} == {
        ("link", "a symbolic link"),
        ("pipe", "not a regular file"),
    }
    assert document["changes"] is None and document["diff"] is None
    assert protocol.ARTIFACTS_DIFF not in members


def test_past_the_limit_files_are_listed_as_omitted_never_cut(
    tmp_path: Path, workers: list[WorkerProcess]
) -> None:
    script = "head -c 5000 /dev/zero > big; printf small > small"
    members = run_in(tmp_path, workers, script, artifact_limit=4096)

    document = manifest(members)
    assert [entry["path"] for entry in document["files"]] == ["small"]
    assert document["omitted"] == [
        {"path": "big", "size": 5000, "why": "over the artifact limit (MAX_ARTIFACT_BYTES)"}
    ]
    assert "files/big" not in members and members["files/small"] == b"small"


def test_no_limit_or_nothing_changed_sends_an_empty_frame(
    tmp_path: Path, workers: list[WorkerProcess]
) -> None:
    for name, script, limit in (("a", "true", 1 << 20), ("b", "echo new > new", 0)):
        (tmp_path / name).mkdir()
        worker = started(tmp_path / name, workers)
        worker.start(base_spec(argv=shell(script), artifact_limit=limit))
        assert frame_of(worker.finish().stdout)[0] == 0


def git(cwd: Path, *args: str) -> str:
    env = os.environ | {
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@example.com",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@example.com",
        "GIT_CONFIG_NOSYSTEM": "1",
    }
    done = subprocess.run(["git", *args], cwd=cwd, env=env, check=True, capture_output=True)
    return done.stdout.decode()


def repository(workspace: Path) -> None:
    git(workspace, "init", "-q", "-b", "main")
    (workspace / "README.md").write_text("hello\nworld\n")
    (workspace / "old.bin").write_bytes(bytes(range(256)) * 4)
    (workspace / "remove.txt").write_text("bye\n")
    git(workspace, "add", "-A")
    git(workspace, "commit", "-q", "-m", "first")


EDITS = """
printf 'hello\\nthere\\nworld\\n' > README.md
head -c 2000 /dev/urandom > new.bin
printf '\\x00\\x01binary' >> old.bin
rm remove.txt
mkdir -p src && printf 'print(1)\\n' > src/main.py
"""


def test_a_repository_job_sends_a_binary_safe_diff_that_applies_to_its_commit(
    tmp_path: Path, workers: list[WorkerProcess]
) -> None:
    source = tmp_path / "origin"
    source.mkdir()
    repository(source)
    commit = git(source, "rev-parse", "HEAD").strip()

    def clone(workspace: Path) -> None:
        workspace.rmdir()
        git(tmp_path, "clone", "-q", str(source), str(workspace))

    members = run_in(
        tmp_path, workers, EDITS, artifact_limit=1 << 20, workspace_commit=commit, prepare=clone
    )

    document = manifest(members)
    assert document["changes"] == {"files": 5, "insertions": 2, "deletions": 1}
    patch = members[protocol.ARTIFACTS_DIFF]
    assert document["diff"] == {"size": len(patch)}
    assert b"GIT binary patch" in patch
    fresh = tmp_path / "fresh"
    git(tmp_path, "clone", "-q", str(source), str(fresh))
    git(fresh, "checkout", "-q", commit)
    (tmp_path / "diff.patch").write_bytes(patch)
    git(fresh, "apply", "--check", str(tmp_path / "diff.patch"))
    git(fresh, "apply", str(tmp_path / "diff.patch"))
    workspace = tmp_path / "root" / "workspace"
    for name in ("README.md", "new.bin", "old.bin", "src/main.py"):
        assert (fresh / name).read_bytes() == (workspace / name).read_bytes()
    assert not (fresh / "remove.txt").exists()
    # .git itself is never an artifact
    assert not [name for name in members if "/.git/" in name or name.startswith("files/.git")]
