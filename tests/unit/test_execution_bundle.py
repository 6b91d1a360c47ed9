"""The bundle tar tower delivers, and the out/ tar it collects (docs/execution.md)."""

from __future__ import annotations

import io
import json
import tarfile
from dataclasses import replace

from tower.execution.bundle import bundle_tar, read_output, spec_document
from tower.execution.slots import ContainerShape
from tower.execution.spec import JobSpec, SpecFile

PROMPT = "/tmp/parpaing/prompt.md"


def job_spec() -> JobSpec:
    return JobSpec(
        job_id="agent-0123456789ab",
        argv=("claude", "-p", "--output-format", "json"),
        env={"ANTHROPIC_BASE_URL": "http://gw:8080", "ANTHROPIC_API_KEY": "tok"},
        cwd="/workspace",
        files=(
            SpecFile(PROMPT, "héllo ✓".encode()),
            SpecFile("/home/worker/.claude/CLAUDE.md", b"# rules\n", 0o644),
        ),
        stdin=PROMPT,
        prompt_file=PROMPT,
        pre_hook="set -e\ngit init -q\n",
        post_hook=None,
        dry_run=False,
        timeout_seconds=900,
        output_limit=10_485_760,
        output_format="json",
        shape=ContainerShape("parpaing-worker:latest", "2g", 2.0, 256, "", "parpaing-workers"),
    )


def members(tar_bytes: bytes) -> dict[str, tuple[tarfile.TarInfo, bytes | None]]:
    found = {}
    with tarfile.open(fileobj=io.BytesIO(tar_bytes)) as tar:
        for info in tar:
            data = tar.extractfile(info)
            found[info.name] = (info, data.read() if data else None)
    return found


def out_tar(files: dict[str, bytes]) -> bytes:
    """What Docker's get_archive of /bundle/out returns: entries under out/."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        directory = tarfile.TarInfo("out")
        directory.type = tarfile.DIRTYPE
        tar.addfile(directory)
        for name, content in files.items():
            info = tarfile.TarInfo(f"out/{name}")
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))
    return buffer.getvalue()


def test_bundle_holds_the_spec_and_each_file_in_order() -> None:
    spec = job_spec()
    found = members(bundle_tar(spec))
    assert sorted(found) == ["job", "job/files", "job/files/0", "job/files/1", "job/spec.json"]
    assert found["job/files/0"][1] == spec.files[0].content
    assert found["job/files/1"][1] == b"# rules\n"


def test_spec_json_is_the_documented_version_1_format() -> None:
    found = members(bundle_tar(job_spec()))
    raw = found["job/spec.json"][1]
    assert raw is not None
    assert json.loads(raw) == {
        "version": 1,
        "job_id": "agent-0123456789ab",
        "argv": ["claude", "-p", "--output-format", "json"],
        "env": {"ANTHROPIC_BASE_URL": "http://gw:8080", "ANTHROPIC_API_KEY": "tok"},
        "cwd": "/workspace",
        "stdin": PROMPT,
        "prompt_file": PROMPT,
        "files": [
            {"source": "files/0", "path": PROMPT, "mode": 0o600},
            {"source": "files/1", "path": "/home/worker/.claude/CLAUDE.md", "mode": 0o644},
        ],
        "pre_hook": "set -e\ngit init -q\n",
        "post_hook": None,
        "dry_run": False,
        "output_limit": 10_485_760,
        "artifact_limit": 0,
    }
    assert json.loads(raw) == spec_document(job_spec())
    commit = "0123456789abcdef0123456789abcdef01234567"
    document = spec_document(replace(job_spec(), workspace_commit=commit))
    assert document["workspace_commit"] == commit


def test_every_entry_belongs_to_the_worker_and_is_private() -> None:
    for name, (info, _) in members(bundle_tar(job_spec())).items():
        assert (info.uid, info.gid) == (1000, 1000), name
        assert info.mode & 0o077 == 0, name


def test_read_output_parses_result_stdout_and_stderr() -> None:
    result = {"version": 1, "exit_code": 0, "phase": "engine", "stdout_bytes": 3}
    output = read_output(
        out_tar(
            {
                "result.json": json.dumps(result).encode(),
                "stdout": b"\x00\xffok",
                "stderr": "warn ✓".encode(),
            }
        )
    )
    assert output.result == result
    assert output.stdout == b"\x00\xffok"  # bytes kept as they are
    assert output.stderr == "warn ✓"


def test_a_missing_result_reads_as_none_with_whatever_else_is_there() -> None:
    output = read_output(out_tar({"stdout": b"partial", "stderr": b"Killed"}))
    assert output.result is None
    assert (output.stdout, output.stderr) == (b"partial", "Killed")


def test_a_malformed_result_reads_as_none() -> None:
    assert read_output(out_tar({"result.json": b"{not json"})).result is None
    assert read_output(out_tar({"result.json": b"[1, 2]"})).result is None


def test_an_empty_or_damaged_archive_reads_as_nothing() -> None:
    for raw in (b"", b"garbage that is not a tar"):
        output = read_output(raw)
        assert (output.result, output.stdout, output.stderr) == (None, b"", "")


def test_invalid_utf8_in_stderr_is_replaced_not_fatal() -> None:
    assert read_output(out_tar({"stderr": b"bad \xff byte"})).stderr == "bad \ufffd byte"
