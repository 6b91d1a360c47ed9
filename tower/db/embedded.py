"""A private PostgreSQL server from the binaries the `pgserver` package ships.

All-in-one mode keeps its data under the XDG state directory; tests and benchmarks
make throwaway ones. PostgreSQL refuses to run as root, so as root the server runs
as an unprivileged system user that owns the data directory.
"""

from __future__ import annotations

import importlib.util
import os
import pwd
import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path

SERVICE_USER = "pgserver"


def _binaries() -> Path:
    # Located without importing pgserver, whose import has side effects we do not want.
    spec = importlib.util.find_spec("pgserver")
    assert spec is not None and spec.submodule_search_locations, "pgserver is not installed"
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"


POSTGRES_BIN_PATH = _binaries()


@dataclass
class LocalPostgres:
    datadir: Path
    port: int = 0

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def start(self) -> LocalPostgres:
        self.datadir.mkdir(parents=True, exist_ok=True)
        if not (self.datadir / "PG_VERSION").exists():
            self._initdb()
        if self._running_port() is None:
            self.port = self.port or free_port()
            self._ctl(
                "start",
                "-w",
                "-t",
                "30",
                "-l",
                str(self.datadir / "server.log"),
                "-o",
                self._options(),
            )
        self.port = self._running_port() or self.port
        return self

    def stop(self, mode: str = "fast") -> None:
        if self._running_port() is not None:
            self._ctl("stop", "-w", "-m", mode)

    def restart(self) -> None:
        self._ctl(
            "restart",
            "-w",
            "-m",
            "fast",
            "-l",
            str(self.datadir / "server.log"),
            "-o",
            self._options(),
        )

    def binary(self, name: str) -> str:
        return str(POSTGRES_BIN_PATH / name)

    def _options(self) -> str:
        return f"-h 127.0.0.1 -p {self.port} -k {self.datadir} -c max_connections=300"

    def _initdb(self) -> None:
        self._own_datadir()
        self._run(
            [
                self.binary("initdb"),
                "-D",
                str(self.datadir),
                "-U",
                "postgres",
                "--auth=trust",
                "--encoding=UTF8",
                "--no-sync",
            ]
        )

    def _ctl(self, *args: str) -> None:
        self._run([self.binary("pg_ctl"), "-D", str(self.datadir), *args])

    def _running_port(self) -> int | None:
        pidfile = self.datadir / "postmaster.pid"
        if not pidfile.exists():
            return None
        lines = pidfile.read_text().splitlines()
        if len(lines) < 4 or not _alive(int(lines[0])):
            return None
        return int(lines[3])

    def _own_datadir(self) -> None:
        if os.geteuid() != 0:
            return
        user = _service_user()
        _open_path_to(self.datadir)
        os.chown(self.datadir, user.pw_uid, user.pw_gid)
        self.datadir.chmod(0o700)

    def _run(self, argv: list[str]) -> None:
        user = SERVICE_USER if os.geteuid() == 0 else None
        result = subprocess.run(argv, user=user, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise RuntimeError(f"{Path(argv[0]).name} failed: {result.stderr or result.stdout}")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _service_user() -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(SERVICE_USER)
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", SERVICE_USER], check=True)
        return pwd.getpwnam(SERVICE_USER)


def _open_path_to(path: Path) -> None:
    # The service user must traverse every parent of its data directory.
    for parent in path.resolve().parents:
        parent.chmod(parent.stat().st_mode | 0o011)
    for binary_dir in (POSTGRES_BIN_PATH, POSTGRES_BIN_PATH.parent / "lib"):
        for parent in binary_dir.resolve().parents:
            parent.chmod(parent.stat().st_mode | 0o011)
