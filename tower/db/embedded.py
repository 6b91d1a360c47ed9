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

import hashlib
import importlib.metadata
import importlib.util
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

SERVICE_USER = "pgserver"
# As root, where tower copies the binaries when the service user cannot reach them.
RUNTIME_ROOT = Path("/var/lib/parpaing")
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
    # Where the server's own user runs the binaries from (see _service_binaries).
    _bin: Path = field(default=POSTGRES_BIN_PATH, init=False, repr=False)

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

    def _server_binary(self, name: str) -> str:
        return str(self._bin / name)

    def _options(self) -> str:
        return f"-h 127.0.0.1 -p {self.port} -k {HERE} -c max_connections=300"

    def _make_datadir(self) -> None:
        # Parents are made with the caller's umask and never changed afterwards.
        self.datadir.parent.mkdir(parents=True, exist_ok=True)
        self.datadir.mkdir(mode=0o700, exist_ok=True)
        if os.geteuid() == 0:
            self._bin = _service_binaries(_service_user())
        if not (self.datadir / "PG_VERSION").exists():
            self._own_datadir()
            self._initdb()

    def _initdb(self) -> None:
        # Trust lasts only until _secure, which runs before the server first listens.
        self._run(
            [
                self._server_binary("initdb"),
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
        single_user = [self._server_binary("postgres"), "--single", "-D", HERE, "-F"]
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
        self._run([self._server_binary("pg_ctl"), "-D", HERE, *args])

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
    # A killed server stays a zombie until its adoptive parent reaps it, and signal 0
    # still reaches a zombie: only its state in /proc tells.
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def _service_user() -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(SERVICE_USER)
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", SERVICE_USER], check=True)
        return pwd.getpwnam(SERVICE_USER)


def _service_binaries(user: pwd.struct_passwd) -> Path:
    """The binaries as the service user can run them: where pgserver installed them, or,
    when a directory above them is closed to that user (a virtualenv in root's home), a
    copy in a directory tower makes for it. An older version opened up every parent
    instead; a directory tower did not make is never changed."""
    site = POSTGRES_BIN_PATH.parents[2]  # holds pgserver/ and pgserver.libs/
    relative = POSTGRES_BIN_PATH.relative_to(site)
    if all(_closed_to(user, site / part) is None for part in _INSTALL_PARTS):
        return POSTGRES_BIN_PATH
    # One copy per pgserver release, whichever environment it was installed in (each test
    # run's fresh virtualenv would otherwise leave another 34 MB behind).
    size = (POSTGRES_BIN_PATH / "postgres").stat().st_size
    identity = f"{importlib.metadata.version('pgserver')}:{size}"
    copy = RUNTIME_ROOT / f"pginstall-{hashlib.sha256(identity.encode()).hexdigest()[:16]}"
    if not copy.exists():
        _copy_install(site, copy)
    closed = _closed_to(user, copy / relative)
    if closed is not None:
        raise RuntimeError(
            f"the PostgreSQL binaries are out of reach of the {user.pw_name} user the server "
            f"runs as: {closed} is closed to it; open it, or set DATABASE_URL"
        )
    return copy / relative


# What the server runs from, laid out as in the wheel: the binaries find their libraries
# in ../../../pgserver.libs.
_INSTALL_PARTS = ("pgserver/pginstall", "pgserver.libs")


def _copy_install(site: Path, copy: Path) -> None:
    if not RUNTIME_ROOT.exists():
        RUNTIME_ROOT.mkdir(parents=True)
        RUNTIME_ROOT.chmod(0o755)  # made here, for the service user to traverse
    # Copied aside then renamed: a concurrent start sees a whole copy or none.
    staging = Path(tempfile.mkdtemp(prefix=".pginstall-", dir=RUNTIME_ROOT))
    for part in _INSTALL_PARTS:
        if (site / part).exists():
            shutil.copytree(site / part, staging / part, symlinks=True)
    for made in [staging, *(staging / part for part in _INSTALL_PARTS)]:
        made.chmod(0o755)
    try:
        staging.rename(copy)
    except OSError:
        shutil.rmtree(staging)  # another start made it first


def _closed_to(user: pwd.struct_passwd, directory: Path) -> Path | None:
    """The first directory on the way to `directory` that `user` may not traverse."""
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
            return each
    return None
