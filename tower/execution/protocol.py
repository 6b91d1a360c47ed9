"""The wire protocol between tower and the worker in its container, stated once.

Both sides import this module: tower as tower.execution.protocol, the worker as the
module `protocol` beside worker.py in the worker image (tower/images/build.py adds
this file to the image's build context). So it imports the standard library only, and
runs under the image's python3 (Debian's 3.11). The prose is docs/execution.md.

1. The worker prints READY_LINE on stdout, then reads its stdin.
2. Tower writes on it a bundle frame: bundle_header(size), then `size` bytes of tar,
   which the worker unpacks into BUNDLE_DIR: JOB_DIR/SPEC_FILE, JOB_DIR/FILES_DIR/<n> and
   JOB_DIR/INPUTS_DIR/<n> (uploads it then unpacks into WORKSPACE_DIR).
3. The worker runs the job, leaves OUTPUT_FILES in BUNDLE_DIR/OUT_DIR (OUTPUT_DIR), then
   writes an output frame on stdout: output_header(size), then `size` bytes of tar of
   OUT_DIR/<file>, at most output_cap(the spec's output_limit) bytes. Over the cap, it
   sends result.json alone, its `reason` RESULT_TOO_LARGE.
   Just before it, an artifacts frame: artifacts_header(size), then `size` bytes of tar
   (ARTIFACTS_MANIFEST, then ARTIFACTS_DIFF for a repository job, then
   ARTIFACT_FILES_DIR/<path> for each file the job created or changed under
   WORKSPACE_DIR, then ARTIFACTS_SESSION for an engine that can resume), at most
   artifact_cap(the spec's artifact_limit) bytes; size 0 when there is nothing to send.
   A tar of ARTIFACTS_FILE_MIN bytes or more that fits the bundle volume (and the
   container's memory) is instead written to ARTIFACTS_FILE, and announced by
   artifacts_file_header(size) with no bytes after it: tower copies it out of the
   volume (get_archive), which skips Docker's log of stdout, and which a replica that
   adopts the job can still do.
4. The entry script (ENTRYPOINT_PATH, worker/entrypoint.sh) prints DONE_LINE once the
   worker has ended, and keeps the container up until tower removes it.
A frame's size is at most SIZE_DIGITS decimal digits; anything else is no frame.
"""

from __future__ import annotations

# --- the image and the container -------------------------------------------------------

# Where the worker image keeps our files (worker/Dockerfile copies them there).
WORKER_DIR = "/opt/parpaing"
WORKER_PATH = f"{WORKER_DIR}/worker.py"
# What tower runs in every worker container (under Docker's init): `sh ENTRYPOINT_PATH`.
ENTRYPOINT_PATH = f"{WORKER_DIR}/entrypoint.sh"
# The image's user, owner of everything the worker writes.
WORKER_UID = 1000
HOME_DIR = "/home/worker"
WORKSPACE_DIR = "/workspace"

# --- the way to the gateway --------------------------------------------------------------

# A worker has no network device but loopback. The gateway's nginx listens on a Unix
# socket in a volume mounted (read-only) at GATEWAY_SOCKET_DIR; the worker forwards
# 127.0.0.1:GATEWAY_PORT to it (worker/forwarder.py), and engines are given
# WORKER_GATEWAY_URL as their provider's base URL.
GATEWAY_SOCKET_DIR = "/run/parpaing-gateway"
GATEWAY_SOCKET = f"{GATEWAY_SOCKET_DIR}/gateway.sock"
GATEWAY_PORT = 4480
WORKER_GATEWAY_URL = f"http://127.0.0.1:{GATEWAY_PORT}"

# --- the way to the egress proxy ---------------------------------------------------------

# Likewise for the egress proxy (docs/egress.md): its relay listens on a Unix socket in a
# volume mounted (read-only) at EGRESS_SOCKET_DIR, and the worker forwards
# 127.0.0.1:EGRESS_PORT to it. A job with an allow-list gets HTTP(S)_PROXY naming
# 127.0.0.1:EGRESS_PORT; a process that ignores them has no route at all.
EGRESS_SOCKET_DIR = "/run/parpaing-egress"
EGRESS_SOCKET = f"{EGRESS_SOCKET_DIR}/egress.sock"
EGRESS_PORT = 4481

# --- the bundle volume ------------------------------------------------------------------

BUNDLE_DIR = "/bundle"
# Inside the bundle (and inside the bundle tar): what to run.
JOB_DIR = "job"
SPEC_FILE = "spec.json"  # in JOB_DIR
FILES_DIR = "files"  # in JOB_DIR: files/<n>, the files the worker places
INPUTS_DIR = "inputs"  # in JOB_DIR: inputs/<n>, the uploads the worker unpacks in /workspace
INPUT_KINDS = ("file", "tar", "tar.gz", "zip", "session")
# A session input (a continued turn, docs/sessions.md) is the tar ARTIFACTS_SESSION of the
# turn it continues: SESSION_WORKSPACE/<path> unpacks into WORKSPACE_DIR (its .git
# included), SESSION_HOME/<path> into HOME_DIR (the engine's state files).
SESSION_INPUT = "session"
SESSION_WORKSPACE = "workspace"
SESSION_HOME = "home"
SPEC_VERSION = 1
# Inside the bundle (and inside the output tar): what the worker leaves.
OUT_DIR = "out"
OUTPUT_DIR = f"{BUNDLE_DIR}/{OUT_DIR}"
STDOUT_FILE = "stdout"  # the engine's stdout, up to the spec's output_limit + 1 bytes
STDERR_FILE = "stderr"  # the tail of its stderr
RESULT_FILE = "result.json"  # written last: its presence means the worker finished
OUTPUT_FILES = (STDOUT_FILE, STDERR_FILE, RESULT_FILE)
RESULT_VERSION = 1
# result.json's `reason` when the worker refused to send files over the output cap.
RESULT_TOO_LARGE = "result_too_large"
# result.json's `reason` when an input could not be unpacked into the workspace.
RESULT_INPUT = "input"
# Room in an output tar beyond the job's stdout: its stderr tail, result.json, headers.
OUTPUT_MARGIN = 8 * 1024 * 1024
# The artifacts frame's tar: the manifest first (JSON: files, omitted, deleted, changes,
# diff), then the diff, then each artifact as ARTIFACT_FILES_DIR/<path in /workspace>.
ARTIFACTS_MANIFEST = "manifest.json"
ARTIFACT_FILES_DIR = "files"
ARTIFACTS_DIFF = "diff.patch"
# The turn's captured session state, last in the frame (not an artifact file): a tar of
# the final workspace and the engine's state paths (the spec's `session_state`).
ARTIFACTS_SESSION = "session.tar"
ARTIFACTS_VERSION = 1
# Bounds the worker keeps so that everything but the files' bytes fits ARTIFACT_MARGIN:
# at most MAX_ARTIFACT_FILES files, each path at most MAX_ARTIFACT_PATH bytes (each tar
# header then takes at most 4 KiB), at most MAX_ARTIFACT_LISTED omitted and deleted
# paths listed (the rest counted), so the manifest stays under MAX_ARTIFACTS_MANIFEST.
MAX_ARTIFACT_FILES = 10_000
MAX_ARTIFACT_PATH = 1024
MAX_ARTIFACT_LISTED = 1000
MAX_ARTIFACTS_MANIFEST = 16 * 1024 * 1024
ARTIFACT_MARGIN = 64 * 1024 * 1024
# Where the worker leaves a large artifacts tar, in the bundle volume (see step 3 above):
# every byte of stdout also goes through Docker's log driver, which costs a 100 MB tar
# about three times the copy of a file out of the volume.
ARTIFACTS_FILE = f"{BUNDLE_DIR}/artifacts.tar"
# Below this size the frame on stdout is cheaper than a copy out of the volume.
ARTIFACTS_FILE_MIN = 1024 * 1024
# In an argv element of the spec: replaced by the prompt file's text (arg-from-file).
PROMPT_PLACEHOLDER = "{prompt}"

# --- lines and frames -------------------------------------------------------------------

READY_LINE = b"parpaing-worker ready"
DONE_LINE = b"parpaing-worker done"
BUNDLE_MARK = b"parpaing-bundle "
OUTPUT_MARK = b"parpaing-worker output "
ARTIFACTS_MARK = b"parpaing-worker artifacts "
ARTIFACTS_FILE_MARK = b"parpaing-worker artifacts-file "
# A frame's size is at most this many digits; a longer run after a mark is no frame.
SIZE_DIGITS = 12
# The longest bundle header line: the mark, the digits, the newline.
BUNDLE_HEADER_MAX = len(BUNDLE_MARK) + SIZE_DIGITS + 1


def job_file(index: int) -> str:
    """The bundle's `index`th file, relative to JOB_DIR (as spec.json names it)."""
    return f"{FILES_DIR}/{index}"


def job_input(index: int) -> str:
    """The bundle's `index`th input, relative to JOB_DIR (as spec.json names it)."""
    return f"{INPUTS_DIR}/{index}"


def bundle_header(size: int) -> bytes:
    """The line tower writes before exactly `size` bytes of bundle tar."""
    return BUNDLE_MARK + _size(size) + b"\n"


def output_header(size: int) -> bytes:
    """The line the worker writes before exactly `size` bytes of output tar."""
    return OUTPUT_MARK + _size(size) + b"\n"


def artifacts_header(size: int) -> bytes:
    """The line the worker writes before exactly `size` bytes of artifacts tar."""
    return ARTIFACTS_MARK + _size(size) + b"\n"


def artifacts_file_header(size: int) -> bytes:
    """The line the worker writes once it left exactly `size` bytes of artifacts tar in
    ARTIFACTS_FILE (nothing follows it on stdout)."""
    return ARTIFACTS_FILE_MARK + _size(size) + b"\n"


def artifact_cap(artifact_limit: int) -> int:
    """The most bytes an artifacts tar may take: the files' and the diff's bytes (at
    most artifact_limit), plus ARTIFACT_MARGIN for headers and the manifest; 0 when
    the job keeps no artifacts."""
    return artifact_limit + ARTIFACT_MARGIN if artifact_limit > 0 else 0


def output_cap(output_limit: int) -> int:
    """The most bytes a tar of OUT_DIR may take, as a frame or copied out of the
    container: the stdout the worker keeps (output_limit + 1 bytes), plus OUTPUT_MARGIN.
    Neither side reads past it, so a sparse file cannot swell into memory."""
    return output_limit + 1 + OUTPUT_MARGIN


def frame_size(digits: bytes) -> int | None:
    """The size a frame header's digits state, or None when they are not a size."""
    if not digits.isdigit() or len(digits) > SIZE_DIGITS:
        return None
    return int(digits)


def bundle_size(header: bytes) -> int | None:
    """The size a whole bundle header line (newline included) states, or None when the
    line is not one."""
    if not header.startswith(BUNDLE_MARK) or not header.endswith(b"\n"):
        return None
    return frame_size(header[len(BUNDLE_MARK) : -1])


def _size(size: int) -> bytes:
    digits = str(size).encode("ascii")
    if size < 0 or len(digits) > SIZE_DIGITS:
        raise ValueError(f"a frame holds 0 to {10**SIZE_DIGITS - 1} bytes, not {size}")
    return digits
