"""The worker's wire protocol is stated once (tower/execution/protocol.py): it runs in the
worker image beside worker.py, the image gets it from the build context build.py
assembles, and the files that cannot import it (the entry script, the Dockerfile) agree
with it."""

from __future__ import annotations

import ast
import shutil
import sys
from pathlib import Path

import pytest

from tower.execution import protocol
from tower.execution.docker.hardening import container_options, shape_from_settings
from tower.images.build import (
    PROTOCOL_FILE,
    WORKER_CONTEXT,
    WORKER_EXTRA_FILES,
    BuildRequest,
    ImageBuildError,
    assembled_context,
    context_digest,
)
from tower.settings import Settings


def test_the_protocol_imports_the_standard_library_only() -> None:
    tree = ast.parse(Path(protocol.__file__).read_text())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, "no relative imports: it runs as a top-level module"
            imported.add(str(node.module).split(".")[0])
    assert imported <= set(sys.stdlib_module_names) | {"__future__"}, imported


@pytest.mark.parametrize("size", [0, 1, 4096, 10**12 - 1])
def test_bundle_headers_round_trip(size: int) -> None:
    header = protocol.bundle_header(size)
    assert header == b"parpaing-bundle " + str(size).encode() + b"\n"
    assert len(header) <= protocol.BUNDLE_HEADER_MAX
    assert protocol.bundle_size(header) == size
    assert protocol.output_header(size) == b"parpaing-worker output " + str(size).encode() + b"\n"


@pytest.mark.parametrize(
    "header",
    [
        b"",
        b"parpaing-bundle 12",  # no newline
        b"parpaing-bundle \n",
        b"parpaing-bundle -1\n",
        b"parpaing-bundle 1x\n",
        b"parpaing-bundle 1234567890123\n",  # 13 digits
        b"parpaing-bundl 12\n",
        b"parpaing-worker output 12\n",
    ],
)
def test_anything_else_is_no_bundle_header(header: bytes) -> None:
    assert protocol.bundle_size(header) is None


def test_a_size_has_at_most_twelve_digits() -> None:
    assert protocol.frame_size(b"000000000007") == 7
    assert protocol.frame_size(b"1" * 13) is None
    assert protocol.frame_size(b"") is None
    with pytest.raises(ValueError):
        protocol.bundle_header(10**12)


def test_the_entry_script_runs_the_worker_and_prints_the_done_line() -> None:
    script = (WORKER_CONTEXT / "entrypoint.sh").read_text()
    lines = [line for line in script.splitlines() if line and not line.startswith("#")]
    assert f"python3 {protocol.WORKER_PATH} <&3 3<&- & worker=$!" in lines
    assert f'echo "{protocol.DONE_LINE.decode()}"' in lines


def test_the_image_holds_entry_script_worker_and_protocol_where_the_protocol_says() -> None:
    assert Path(protocol.ENTRYPOINT_PATH).parent == Path(protocol.WORKER_DIR)
    assert Path(protocol.WORKER_PATH).parent == Path(protocol.WORKER_DIR)
    dockerfile = (WORKER_CONTEXT / "Dockerfile").read_text()
    names = {Path(protocol.ENTRYPOINT_PATH).name, Path(protocol.WORKER_PATH).name, "protocol.py"}
    names.add("forwarder.py")  # worker.py imports it from beside itself
    names.add("artifacts.py")  # and this one
    copies = [line.split()[1:] for line in dockerfile.splitlines() if line.startswith("COPY ")]
    ours = [words for words in copies if words[-1] == f"{protocol.WORKER_DIR}/"]
    assert len(ours) == 1 and set(ours[0][:-1]) == names, copies
    assert set(WORKER_EXTRA_FILES) == {"protocol.py"}


def test_tower_runs_the_entry_script_of_the_image() -> None:
    settings = Settings()
    options = container_options(shape_from_settings(settings), settings, "s1", "v1")
    assert options["command"] == ["sh", protocol.ENTRYPOINT_PATH]
    assert options["volumes"] == {
        "v1": {"bind": protocol.BUNDLE_DIR, "mode": "rw"},
        "parpaing-gateway-socket": {"bind": protocol.GATEWAY_SOCKET_DIR, "mode": "ro"},
        # The egress proxy's socket (docs/egress.md), which tower runs as it runs the gateway.
        "parpaing-egress-socket": {"bind": protocol.EGRESS_SOCKET_DIR, "mode": "ro"},
    }
    assert options["network_mode"] == "none" and "network" not in options


def test_without_the_egress_proxy_workers_get_no_socket_of_it() -> None:
    settings = Settings(gateway_managed=False)
    options = container_options(shape_from_settings(settings), settings, "s1", "v1")
    assert protocol.EGRESS_SOCKET_DIR not in [v["bind"] for v in options["volumes"].values()]


def test_the_worker_build_context_gets_tower_s_protocol_beside_worker_py() -> None:
    request = BuildRequest("parpaing-worker:test", extra_files=WORKER_EXTRA_FILES)
    with assembled_context(request) as context:
        assert context != WORKER_CONTEXT
        assert (context / "protocol.py").read_bytes() == PROTOCOL_FILE.read_bytes()
        assert (context / "worker.py").read_bytes() == (WORKER_CONTEXT / "worker.py").read_bytes()
        # The label build.py puts on the image is the digest of what Docker was given.
        assert context_digest(context) == context_digest(WORKER_CONTEXT, WORKER_EXTRA_FILES)
    assert not context.exists()  # the copy goes once the build is done
    assert Path(protocol.__file__).resolve() == PROTOCOL_FILE


def test_a_context_without_extra_files_is_built_in_place(tmp_path: Path) -> None:
    with assembled_context(BuildRequest("x:test", context=tmp_path)) as context:
        assert context == tmp_path


def test_a_changed_protocol_makes_the_worker_image_outdated(tmp_path: Path) -> None:
    context = tmp_path / "worker"
    shutil.copytree(WORKER_CONTEXT, context)
    extra = tmp_path / "protocol.py"
    extra.write_text("A = 1\n")
    before = context_digest(context, {"protocol.py": extra})
    assert before != context_digest(context)
    extra.write_text("A = 2\n")
    assert context_digest(context, {"protocol.py": extra}) != before


def test_an_extra_file_never_replaces_one_of_the_context(tmp_path: Path) -> None:
    (tmp_path / "protocol.py").write_text("stale = True\n")
    request = BuildRequest("x:test", context=tmp_path, extra_files=WORKER_EXTRA_FILES)
    with pytest.raises(ImageBuildError, match="the context has one"), assembled_context(request):
        pass
