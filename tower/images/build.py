"""Build the images tower runs: the Debian base, then the worker, gateway and egress proxy
images on it.

The base is pulled when a registry answers; when none does (air-gapped or registry-less
machines) the same Debian release is bootstrapped locally with debootstrap and imported
under the same tag, so `FROM debian:bookworm-slim` builds unchanged either way.

The worker, gateway and egress images are built by the Docker CLI with BuildKit, because
the SDK cannot pass BuildKit secrets: an optional CA bundle reaches apt/npm/pip as a build
secret (for TLS-intercepting proxies) without ending up in any image layer.

With --all it also builds the images of the compose deployment (docker-compose.yml): the
tower image (TOWER_IMAGE, default parpaing-tower:latest) and the load balancer (LB_IMAGE,
default parpaing-lb:latest), the same way, so a CA bundle reaches their builds too.

Usage: python -m tower.images.build build [--all] [--ca-bundle FILE] [--no-ca-bundle]
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import docker
from docker.errors import DockerException, ImageNotFound

from tower import resources
from tower.errors import TowerError, Unavailable, one_line
from tower.settings import Settings

Log = Callable[[str], None]

BASE_IMAGE = "debian:bookworm-slim"
DEBIAN_SUITE = "bookworm"
SECURITY_SUITE = f"{DEBIAN_SUITE}-security"
APT_SOURCES = Path("/etc/apt/sources.list")
APT_SOURCES_DIR = Path("/etc/apt/sources.list.d")
# The worker's and the gateway's build contexts ship with the package (tower.resources);
# the compose deployment's images (--all) build from the repository, so only in a checkout.
REPO_ROOT = resources.CHECKOUT
WORKER_CONTEXT = resources.shipped("worker")
GATEWAY_CONTEXT = resources.shipped("gateway")
EGRESS_CONTEXT = resources.shipped("egress")
# The worker image holds the wire protocol it shares with tower beside worker.py (which
# imports it as `protocol`; worker/Dockerfile copies it): tower's own module, added to the
# build context build_worker_image assembles, so there is one copy of it. Taken as a file
# of the package, not imported: image builds sit below execution in tower's layers.
PROTOCOL_FILE = Path(__file__).resolve().parents[1] / "execution" / "protocol.py"
WORKER_EXTRA_FILES: Mapping[str, Path] = {"protocol.py": PROTOCOL_FILE}
IMAGES = ("worker", "gateway", "egress")
# Docker CLIs from 23.0 on delegate BuildKit to the buildx plugin; older ones embed it.
LAST_CLI_WITH_EMBEDDED_BUILDKIT = 22


class ImageBuildError(Unavailable):
    """An image could not be built; the message says which step failed and why."""


def print_line(line: str) -> None:
    print(line, flush=True)


CONTEXT_LABEL = "parpaing.context_digest"


@dataclass(frozen=True)
class BuildRequest:
    image: str
    ca_bundle: Path | None = None
    context: Path = WORKER_CONTEXT
    what: str = "worker image"
    dockerfile: Path | None = None  # default: the context's Dockerfile
    # Label the image with a digest of its context (image_is_current). Off for images
    # whose context is the whole repository, where only .dockerignore knows what counts.
    label_context: bool = True
    # Files from elsewhere added to the context (name at its top -> source), such as
    # WORKER_EXTRA_FILES: the build then runs on an assembled copy of the context.
    extra_files: Mapping[str, Path] = field(default_factory=dict)


def context_digest(context: Path, extra_files: Mapping[str, Path] | None = None) -> str:
    """A digest of every file of a build context (names, modes, contents), `extra_files`
    included as the assembled context holds them: the image is labelled with it, so a
    changed context is seen without building."""
    found = {
        p.relative_to(context).as_posix(): p
        for p in context.rglob("*")
        if p.is_file() and not _ignored(p.relative_to(context))
    }
    found |= dict(extra_files or {})
    digest = hashlib.sha256()
    for name in sorted(found, key=PurePosixPath):
        path = found[name]
        digest.update(f"{name}\0{path.stat().st_mode & 0o777}\0".encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def _ignored(relative: Path) -> bool:
    """What the contexts' .dockerignore leaves out, and so the image never holds: Python's
    bytecode caches, which come and go (tests import worker.py, pip compiles it)."""
    return "__pycache__" in relative.parts or relative.suffix == ".pyc"


def image_is_current(
    image: str, context: Path, extra_files: Mapping[str, Path] | None = None
) -> bool:
    """Is `image` present and built from `context` (plus `extra_files`) as it is now?"""
    label = _context_label(image)
    return label is not None and label == context_digest(context, extra_files)


def image_is_outdated(
    image: str, context: Path, extra_files: Mapping[str, Path] | None = None
) -> bool:
    """Was `image` built by this code from another version of `context`? An image without
    the label (built some other way, or pulled) is taken as it is, and so is any image
    when this installation has no such context to compare with (the compose deployment's
    tower image carries no worker/ sources)."""
    if not (context / "Dockerfile").is_file():
        return False
    label = _context_label(image)
    return bool(label) and label != context_digest(context, extra_files)


def _context_label(image: str) -> str | None:
    """The image's context digest label: "" without one, None when there is no image."""
    client = _docker_client()
    try:
        labels = client.images.get(image).labels or {}
    except ImageNotFound:
        return None
    finally:
        client.close()
    return str(labels.get(CONTEXT_LABEL) or "")


def deployment_requests(ca_bundle: Path | None) -> list[BuildRequest]:
    """The compose deployment's own images (tags as docker-compose.yml names them)."""
    tower = os.environ.get("TOWER_IMAGE") or "parpaing-tower:latest"
    lb = os.environ.get("LB_IMAGE") or "parpaing-lb:latest"
    return [
        BuildRequest(tower, ca_bundle, REPO_ROOT, "tower image", label_context=False),
        BuildRequest(
            lb, ca_bundle, REPO_ROOT, "load balancer image", REPO_ROOT / "lb" / "Dockerfile", False
        ),
    ]


def build_images(
    settings: Settings,
    *,
    ca_bundle: Path | None = None,
    log: Log = print_line,
    which: Sequence[str] = IMAGES,
    deployment: bool = False,
) -> str:
    """Make sure the base image exists and (re)build the images named in `which` (worker,
    gateway, egress), and with `deployment` the compose deployment's (tower, load
    balancer); returns the worker image's tag."""
    bundle = _checked_bundle(ca_bundle)
    ensure_base_image(log)
    if "worker" in which:
        worker = BuildRequest(settings.worker_image, bundle, extra_files=WORKER_EXTRA_FILES)
        build_worker_image(worker, log)
    if "gateway" in which:
        gateway = BuildRequest(settings.gateway_image, bundle, GATEWAY_CONTEXT, "gateway image")
        build_worker_image(gateway, log)
    if "egress" in which:
        egress = BuildRequest(settings.egress_image, bundle, EGRESS_CONTEXT, "egress image")
        build_worker_image(egress, log)
    for extra in deployment_requests(bundle) if deployment else []:
        build_worker_image(extra, log)
    return settings.worker_image


def _checked_bundle(ca_bundle: Path | None) -> Path | None:
    if ca_bundle is not None and not ca_bundle.is_file():
        raise ImageBuildError(f"ca_bundle: {ca_bundle} is not a readable file")
    return ca_bundle


def default_ca_bundle() -> Path | None:
    """The host's CA bundle, when SSL_CERT_FILE names one: what a proxied host trusts."""
    named = os.environ.get("SSL_CERT_FILE", "")
    return Path(named) if named and Path(named).is_file() else None


# --- base image -------------------------------------------------------------------------


def ensure_base_image(log: Log = print_line) -> None:
    client = _docker_client()
    try:
        if _image_present(client, BASE_IMAGE):
            log(f"base image {BASE_IMAGE} is present")
            return
        if _pull(client, BASE_IMAGE, log):
            return
    finally:
        client.close()
    bootstrap_base_image(log)


def _docker_client() -> docker.DockerClient:
    try:
        return docker.from_env()
    except DockerException as exc:
        raise ImageBuildError(f"docker: cannot reach the Docker daemon ({exc})") from exc


def _image_present(client: docker.DockerClient, image: str) -> bool:
    try:
        client.images.get(image)
    except ImageNotFound:
        return False
    return True


def _pull(client: docker.DockerClient, image: str, log: Log) -> bool:
    log(f"pulling {image}")
    try:
        client.images.pull(image)
    except DockerException as exc:
        log(f"pull failed ({one_line(exc)}); building {image} locally with debootstrap")
        return False
    return True


def bootstrap_base_image(log: Log = print_line) -> None:
    """Build the Debian base from the host's mirror and import it under BASE_IMAGE."""
    if shutil.which("debootstrap") is None:
        raise ImageBuildError(
            f"base image: {BASE_IMAGE} cannot be pulled and debootstrap is not installed; "
            "run scripts/setup-docker (or apt-get install debootstrap) and retry"
        )
    mirrors = apt_mirrors(_apt_source_texts())
    # Without a mirror from the host, debootstrap uses its own default one.
    mirror = [mirrors[DEBIAN_SUITE]] if DEBIAN_SUITE in mirrors else []
    with tempfile.TemporaryDirectory(prefix="parpaing-rootfs-") as tmp:
        rootfs = Path(tmp) / "rootfs"
        log(f"debootstrap {DEBIAN_SUITE} from {mirror or 'its default mirror'} (about 30 s)")
        _run_streamed(
            ["debootstrap", "--variant=minbase", DEBIAN_SUITE, str(rootfs), *mirror],
            log,
            step="debootstrap",
        )
        _write_rootfs_sources(rootfs, mirrors)
        _trim_rootfs(rootfs)
        _import_rootfs(rootfs, log)
    log(f"imported {BASE_IMAGE}")


def _apt_source_texts() -> list[str]:
    files = [APT_SOURCES] if APT_SOURCES.is_file() else []
    if APT_SOURCES_DIR.is_dir():
        files += sorted(APT_SOURCES_DIR.glob("*.sources"))
        files += sorted(APT_SOURCES_DIR.glob("*.list"))
    return [path.read_text(errors="replace") for path in files]


def apt_mirrors(source_texts: Iterable[str]) -> dict[str, str]:
    """Map the Debian suites we need to the first mirror apt's sources give for each.

    Understands both the one-line format and deb822 stanzas. Suites the host does not
    list are left out; a missing security mirror is guessed from the main one when it
    follows Debian's usual `.../debian` and `.../debian-security` layout.
    """
    found: dict[str, str] = {}
    for text in source_texts:
        for uri, suites in _source_entries(text):
            for suite in suites:
                found.setdefault(suite, uri.rstrip("/"))
    mirrors = {s: found[s] for s in (DEBIAN_SUITE, SECURITY_SUITE) if s in found}
    main = mirrors.get(DEBIAN_SUITE, "")
    if SECURITY_SUITE not in mirrors and main.endswith("/debian"):
        mirrors[SECURITY_SUITE] = f"{main}-security"
    return mirrors


def _source_entries(text: str) -> list[tuple[str, list[str]]]:
    if re.search(r"^\s*URIs:", text, re.MULTILINE | re.IGNORECASE):
        return _deb822_entries(text)
    return _one_line_entries(text)


def _one_line_entries(text: str) -> list[tuple[str, list[str]]]:
    entries = []
    for line in text.splitlines():
        # `deb [arch=amd64 signed-by=...] URI SUITE COMPONENTS...`
        words = re.sub(r"\[[^\]]*\]", " ", line.split("#", 1)[0]).split()
        if len(words) >= 3 and words[0] == "deb":
            entries.append((words[1], [words[2]]))
    return entries


def _deb822_entries(text: str) -> list[tuple[str, list[str]]]:
    entries = []
    for stanza in re.split(r"\n\s*\n", text):
        fields = _deb822_fields(stanza)
        if "deb" not in fields.get("types", "").split():
            continue
        if fields.get("enabled", "yes").lower() == "no":
            continue
        suites = fields.get("suites", "").split()
        entries += [(uri, suites) for uri in fields.get("uris", "").split()]
    return entries


def _deb822_fields(stanza: str) -> dict[str, str]:
    fields: dict[str, str] = {}
    for line in stanza.splitlines():
        if line.startswith("#") or ":" not in line or line[:1].isspace():
            continue
        key, value = line.split(":", 1)
        fields[key.strip().lower()] = value.strip()
    return fields


def _write_rootfs_sources(rootfs: Path, mirrors: dict[str, str]) -> None:
    """Give the image the official image's suites: the release, its updates, security.

    Without a mirror from the host, the sources debootstrap wrote stay as they are.
    """
    if DEBIAN_SUITE not in mirrors:
        return
    stanzas = [_deb822_stanza(mirrors[DEBIAN_SUITE], f"{DEBIAN_SUITE} {DEBIAN_SUITE}-updates")]
    if SECURITY_SUITE in mirrors:
        stanzas.append(_deb822_stanza(mirrors[SECURITY_SUITE], SECURITY_SUITE))
    (rootfs / "etc/apt/sources.list").unlink(missing_ok=True)
    (rootfs / "etc/apt/sources.list.d/debian.sources").write_text("\n".join(stanzas))


def _deb822_stanza(uri: str, suites: str) -> str:
    return (
        f"Types: deb\nURIs: {uri}\nSuites: {suites}\nComponents: main\n"
        "Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n"
    )


# What the official -slim images leave out of every package: documentation and
# translations (copyright notices stay). Written into the image so later installs obey it.
SLIM_DPKG_FILTER = """\
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/groff/*
path-exclude /usr/share/info/*
path-exclude /usr/share/lintian/*
path-exclude /usr/share/linda/*
path-exclude /usr/share/locale/*
path-include /usr/share/locale/locale.alias
"""


def _trim_rootfs(rootfs: Path) -> None:
    (rootfs / "etc/dpkg/dpkg.cfg.d/slim").write_text(SLIM_DPKG_FILTER)
    # Package lists and downloaded .debs are stale the moment the image exists.
    for leftover in ("var/cache/apt/archives", "var/lib/apt/lists"):
        _remove_files(rootfs / leftover, keep=())
    _remove_files(rootfs / "usr/share/doc", keep=("copyright",))
    for directory in ("usr/share/man", "usr/share/info"):
        _remove_files(rootfs / directory, keep=())
    _remove_files(rootfs / "usr/share/locale", keep=("locale.alias",))


def _remove_files(directory: Path, *, keep: tuple[str, ...]) -> None:
    for path in sorted(directory.rglob("*"), reverse=True):
        if path.is_symlink() or path.is_file():
            if path.name not in keep:
                path.unlink()
        elif path.is_dir() and not any(path.iterdir()):
            path.rmdir()


def _import_rootfs(rootfs: Path, log: Log) -> None:
    log(f"importing {rootfs} as {BASE_IMAGE}")
    tar = subprocess.Popen(
        ["tar", "--numeric-owner", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE
    )
    assert tar.stdout is not None
    imported = subprocess.run(
        [shutil.which("docker") or "docker", "import", "--change", 'CMD ["bash"]', "-", BASE_IMAGE],
        stdin=tar.stdout,
        capture_output=True,
        text=True,
        check=False,
    )
    tar.stdout.close()
    if tar.wait() != 0 or imported.returncode != 0:
        raise ImageBuildError(f"base image: docker import failed: {imported.stderr.strip()}")


# --- worker and gateway images ----------------------------------------------------------


def build_worker_image(request: BuildRequest, log: Log = print_line) -> None:
    """Build one of our images (the worker's by default) from its Dockerfile's directory."""
    dockerfile = request.dockerfile or request.context / "Dockerfile"
    if not dockerfile.is_file():
        raise ImageBuildError(f"{request.what}: no Dockerfile at {dockerfile}")
    previous = _image_id(request.image)
    log(f"building {request.image} from {dockerfile}" + _bundle_note(request))
    with assembled_context(request) as context:
        command, env = buildkit_command(request, context)
        _run_streamed(command, log, step=f"{request.what} {request.image}", env=env)
    log(f"built {request.image}")
    if previous is not None and previous != _image_id(request.image):
        _remove_if_unused(previous, log)


def _image_id(image: str) -> str | None:
    client = _docker_client()
    try:
        return str(client.images.get(image).id)
    except ImageNotFound:
        return None
    finally:
        client.close()


def _remove_if_unused(image_id: str, log: Log) -> None:
    """Drop the image a rebuild replaced (gigabytes each), unless something still uses it.

    Without force, Docker refuses while a container (say, a warm worker) or another tag
    still refers to it; that image then stays for the operator to prune later.
    """
    client = _docker_client()
    try:
        client.images.remove(image_id)
        log(f"removed the replaced image {image_id[:19]}")
    except DockerException as exc:
        log(f"kept the replaced image {image_id[:19]}: {one_line(exc)}")
    finally:
        client.close()


def _bundle_note(request: BuildRequest) -> str:
    if request.ca_bundle is None:
        return ""
    return f" (CA bundle {request.ca_bundle} as build secret 'ca')"


@contextlib.contextmanager
def assembled_context(request: BuildRequest) -> Iterator[Path]:
    """The directory to build from: the request's context itself, or, when it has extra
    files, a temporary copy of it with them added (removed after the build). A copy, not
    links: Docker sends a symlink as a link, and one pointing out of the context is
    dangling in the image."""
    if not request.extra_files:
        yield request.context
        return
    with tempfile.TemporaryDirectory(prefix="parpaing-context-") as tmp:
        context = Path(tmp) / request.context.name
        shutil.copytree(request.context, context)
        for name, source in request.extra_files.items():
            target = context / name
            if target.exists() or not source.is_file():
                raise ImageBuildError(
                    f"{request.what}: cannot add {source} to its build context as {name}"
                    f" ({'the context has one' if target.exists() else 'no such file'})"
                )
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
        yield context


def buildkit_command(
    request: BuildRequest, context: Path | None = None
) -> tuple[list[str], dict[str, str]]:
    """The CLI invocation that builds the image with BuildKit on this host, from
    `context` (default: the request's; see assembled_context)."""
    cli = _docker_cli()
    build = [cli, "buildx", "build", "--load"] if _has_buildx(cli) else [cli, "build"]
    command = [*build, "--progress=plain", "-t", request.image]
    if request.label_context:
        digest = context_digest(request.context, request.extra_files)
        command += ["--label", f"{CONTEXT_LABEL}={digest}"]
    if request.dockerfile is not None:
        command += ["-f", str(request.dockerfile)]
    if request.ca_bundle is not None:
        command += ["--secret", f"id=ca,src={request.ca_bundle}"]
    command.append(str(context or request.context))
    return command, {**os.environ, "DOCKER_BUILDKIT": "1"}


def _docker_cli() -> str:
    """The first docker CLI on PATH that can run BuildKit builds.

    A CLI from 23.0 on needs the buildx plugin for BuildKit; Debian's docker.io ships an
    older CLI with BuildKit built in, so either qualifies.
    """
    candidates = _all_on_path("docker")
    for cli in candidates:
        if _has_buildx(cli) or _cli_major_version(cli) <= LAST_CLI_WITH_EMBEDDED_BUILDKIT:
            return cli
    if not candidates:
        raise ImageBuildError("docker: no docker CLI on PATH; run scripts/setup-docker")
    raise ImageBuildError(
        "docker: the docker CLI on PATH cannot build with BuildKit (buildx plugin missing); "
        "install docker-buildx or Debian's docker.io (scripts/setup-docker)"
    )


def _all_on_path(name: str) -> list[str]:
    found: list[str] = []
    for directory in os.environ.get("PATH", "").split(os.pathsep):
        path = shutil.which(name, path=directory)
        if path and os.path.realpath(path) not in map(os.path.realpath, found):
            found.append(path)
    return found


def _has_buildx(cli: str) -> bool:
    return _quiet([cli, "buildx", "version"]).returncode == 0


def _cli_major_version(cli: str) -> int:
    result = _quiet([cli, "version", "--format", "{{.Client.Version}}"])
    match = re.match(r"(\d+)\.", result.stdout.strip())
    return int(match.group(1)) if match else sys.maxsize


def _quiet(command: Sequence[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, capture_output=True, text=True, check=False, timeout=60)


# --- helpers ----------------------------------------------------------------------------


def _run_streamed(
    command: Sequence[str], log: Log, *, step: str, env: dict[str, str] | None = None
) -> None:
    """Run a long command, passing each output line to `log` as it comes."""
    process = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        errors="replace",
        env=env,
    )
    assert process.stdout is not None
    tail: list[str] = []
    for line in process.stdout:
        log(line.rstrip("\n"))
        tail = [*tail[-19:], line.rstrip("\n")]
    if process.wait() != 0:
        last = "\n".join(tail)
        raise ImageBuildError(f"{step}: failed with exit code {process.returncode}:\n{last}")


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="parpaing images")
    commands = parser.add_subparsers(dest="command", required=True)
    build = commands.add_parser("build", help="build the base, worker, gateway and egress images")
    build.add_argument(
        "--ca-bundle",
        type=Path,
        default=None,
        help="PEM CA bundle trusted during the build (default: $SSL_CERT_FILE when set)",
    )
    build.add_argument(
        "--no-ca-bundle", action="store_true", help="do not pass any CA bundle to the build"
    )
    build.add_argument(
        "--all",
        action="store_true",
        help="also build the compose deployment's tower and load balancer images",
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse_args(argv)
    bundle = None if args.no_ca_bundle else (args.ca_bundle or default_ca_bundle())
    settings = Settings()
    try:
        build_images(settings, ca_bundle=bundle, deployment=args.all)
    except TowerError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 1
    print(f"ready: {settings.worker_image} {settings.gateway_image} {settings.egress_image}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
