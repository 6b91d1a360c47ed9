"""A private PostgreSQL server from the binaries the `pgserver` package ships.

All-in-one mode keeps its data under the XDG state directory; tests and benchmarks
make throwaway ones. PostgreSQL refuses to run as root, so as root the server runs
as an unprivileged system user that owns the data directory.

Only the user who runs tower may connect: every connection proves a generated password
(scram-sha-256) kept in a 0600 file next to the data directory, the server listens on
loopback and on a socket inside its 0700 data directory, and a data directory an older
version left trusting every local user is converted before the server starts again.

The server's processes reach the data directory through their working directory, which
the starting process enters before dropping to the service user: no parent directory
needs to be opened to that user.
"""

from __future__ import annotations

import importlib.util
import os
import pwd
import secrets
import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path

SERVICE_USER = "pgserver"
SUPERUSER = "postgres"
# The data directory as the server's own processes name it: their working directory.
HERE = "/proc/self/cwd"
HBA = """\
# Written by parpaing on every start: every connection proves the superuser's password
# (scram-sha-256), kept in the .password file next to this data directory.
local all all scram-sha-256
host all all 127.0.0.1/32 scram-sha-256
host all all ::1/128 scram-sha-256
"""


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
        return f"postgresql://{SUPERUSER}:{self.password}@127.0.0.1:{self.port}/postgres"

    @property
    def public_url(self) -> str:
        """The URL without its password, fit to print."""
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/postgres"

    @property
    def password_file(self) -> Path:
        """In libpq's password-file format, so `PGPASSFILE=<it> psql` works too."""
        return self.datadir.with_name(f"{self.datadir.name}.password")

    @property
    def password(self) -> str:
        return self.password_file.read_text().strip().split(":", 4)[4]

    def start(self) -> LocalPostgres:
        self._make_datadir()
        if self._running_port() is not None and not self._secured():
            self.stop()  # started by an older version, trusting every local user
        if self._running_port() is None:
            self._secure()
            self.port = self.port or free_port()
            self._ctl("start", "-w", "-t", "30", "-l", f"{HERE}/server.log", "-o", self._options())
        self.port = self._running_port() or self.port
        return self

    def stop(self, mode: str = "fast") -> None:
        if self._running_port() is not None:
            self._ctl("stop", "-w", "-m", mode)

    def restart(self) -> None:
        self._ctl("restart", "-w", "-m", "fast", "-l", f"{HERE}/server.log", "-o", self._options())

    def postmaster_pid(self) -> int | None:
        """The running server's process id, if it runs."""
        lines = self._pidfile_lines()
        if not lines or not _alive(int(lines[0])):
            return None
        return int(lines[0])

    def binary(self, name: str) -> str:
        return str(POSTGRES_BIN_PATH / name)

    def _options(self) -> str:
        return f"-h 127.0.0.1 -p {self.port} -k {HERE} -c max_connections=300"

    def _make_datadir(self) -> None:
        # Parents are made with the caller's umask and never changed afterwards.
        self.datadir.parent.mkdir(parents=True, exist_ok=True)
        self.datadir.mkdir(mode=0o700, exist_ok=True)
        if os.geteuid() == 0:
            _require_reachable(POSTGRES_BIN_PATH.parent, _service_user())
        if not (self.datadir / "PG_VERSION").exists():
            self._own_datadir()
            self._initdb()

    def _initdb(self) -> None:
        # Trust lasts only until _secure, which runs before the server first listens.
        self._run(
            [
                self.binary("initdb"),
                *("-D", HERE, "-U", SUPERUSER),
                *("--auth=trust", "--encoding=UTF8", "--no-sync"),
            ]
        )

    def _secured(self) -> bool:
        hba = self.datadir / "pg_hba.conf"
        return self.password_file.exists() and hba.read_text() == HBA

    def _secure(self) -> None:
        """Set the superuser's password, then make pg_hba demand it. Safe to repeat:
        an interrupted run is finished by the next start."""
        if self._secured():
            return
        password = self._password_kept()
        statement = f"ALTER ROLE {SUPERUSER} PASSWORD '{password}';\n"
        single_user = [self.binary("postgres"), "--single", "-D", HERE, "-F"]
        self._run([*single_user, "-c", "exit_on_error=true", "postgres"], stdin=statement)
        # Rewritten in place: the file keeps its owner (the service user) and its mode.
        (self.datadir / "pg_hba.conf").write_text(HBA)

    def _password_kept(self) -> str:
        if not self.password_file.exists():
            line = f"*:*:*:{SUPERUSER}:{secrets.token_urlsafe(32)}\n"
            descriptor = os.open(self.password_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(descriptor, "w") as file:
                file.write(line)
        self.password_file.chmod(0o600)  # ours: libpq also refuses a looser one
        return self.password

    def _ctl(self, *args: str) -> None:
        self._run([self.binary("pg_ctl"), "-D", HERE, *args])

    def _running_port(self) -> int | None:
        lines = self._pidfile_lines()
        if len(lines) < 4 or not _alive(int(lines[0])):
            return None
        return int(lines[3])

    def _pidfile_lines(self) -> list[str]:
        try:
            return (self.datadir / "postmaster.pid").read_text().splitlines()
        except FileNotFoundError:
            return []

    def _own_datadir(self) -> None:
        if os.geteuid() != 0:
            return
        user = _service_user()
        os.chown(self.datadir, user.pw_uid, user.pw_gid)
        self.datadir.chmod(0o700)

    def _run(self, argv: list[str], stdin: str | None = None) -> None:
        # The child enters the data directory before it drops to the service user, so
        # that user never needs to traverse the directories above it.
        user = _service_user() if os.geteuid() == 0 else None
        result = subprocess.run(
            argv,
            cwd=self.datadir,
            input=stdin,
            capture_output=True,
            text=True,
            check=False,
            user=user.pw_uid if user else None,
            group=user.pw_gid if user else None,
            extra_groups=[] if user else None,  # not root's groups
        )
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


def _require_reachable(directory: Path, user: pwd.struct_passwd) -> None:
    """The service user must run the binaries; a directory tower did not make is never
    opened up for it (an older version did that to every parent)."""
    groups = set(os.getgrouplist(user.pw_name, user.pw_gid))
    for each in [*reversed(directory.resolve().parents), directory.resolve()]:
        status = each.stat()
        if status.st_uid == user.pw_uid:
            search = 0o100
        elif status.st_gid in groups:
            search = 0o010
        else:
            search = 0o001
        if not status.st_mode & search:
            raise RuntimeError(
                f"the PostgreSQL binaries in {directory} are out of reach of the "
                f"{user.pw_name} user it runs as: {each} is closed to it; install parpaing "
                "where other users may read it, or set DATABASE_URL"
            )
