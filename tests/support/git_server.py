"""A real git server for tests: Debian's `git http-backend` behind nginx (via fcgiwrap),
smart HTTP on loopback with basic auth, so clones and pushes go through the real `git`
client the way they would to a forge."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tower.db.embedded import free_port

HTTP_BACKEND = "/usr/lib/git-core/git-http-backend"
SETUP_HINT = "the git server needs nginx and fcgiwrap: apt-get install nginx-light fcgiwrap"
START_DEADLINE = 20.0

NGINX_CONF = """
worker_processes 1;
pid {root}/nginx.pid;
error_log {root}/nginx-error.log warn;
{user}
events {{ worker_connections 64; }}
http {{
    access_log off;
    client_body_temp_path {root}/tmp/body;
    fastcgi_temp_path {root}/tmp/fastcgi;
    proxy_temp_path {root}/tmp/proxy;
    uwsgi_temp_path {root}/tmp/uwsgi;
    scgi_temp_path {root}/tmp/scgi;
    server {{
        listen 127.0.0.1:{port};
        location ~ ^/git(/.*)$ {{
            auth_basic "git";
            auth_basic_user_file {root}/htpasswd;
            client_max_body_size 0;
            fastcgi_pass unix:{root}/fcgiwrap.sock;
            include /etc/nginx/fastcgi_params;
            fastcgi_param SCRIPT_FILENAME {backend};
            fastcgi_param GIT_PROJECT_ROOT {root}/repos;
            fastcgi_param GIT_HTTP_EXPORT_ALL "";
            fastcgi_param PATH_INFO $1;
            fastcgi_param REMOTE_USER $remote_user;
        }}
    }}
}}
"""


@dataclass
class GitServer:
    root: Path
    port: int
    username: str
    password: str

    def url(self, repo: str) -> str:
        return f"http://127.0.0.1:{self.port}/git/{repo}.git"

    def authed_url(self, repo: str) -> str:
        return f"http://{self.username}:{self.password}@127.0.0.1:{self.port}/git/{repo}.git"

    def bare(self, repo: str) -> Path:
        return self.root / "repos" / f"{repo}.git"

    def create(self, repo: str, files: dict[str, bytes], branch: str = "main") -> str:
        """A bare repository holding one commit of `files` on `branch`; its sha."""
        bare = self.bare(repo)
        git("init", "-q", "--bare", f"--initial-branch={branch}", str(bare))
        git("-C", str(bare), "config", "http.receivepack", "true")
        work = self.root / "work" / repo
        git("init", "-q", f"--initial-branch={branch}", str(work))
        for name, content in files.items():
            (work / name).parent.mkdir(parents=True, exist_ok=True)
            (work / name).write_bytes(content)
        git("-C", str(work), "add", "-A")
        commit(work, "initial")
        git("-C", str(work), "push", "-q", self.authed_url(repo), f"{branch}:{branch}")
        return head(work)

    def commit_more(self, repo: str, files: dict[str, bytes], branch: str = "main") -> str:
        """Another commit on `branch` (pushed); its sha."""
        work = self.root / "work" / repo
        git("-C", str(work), "checkout", "-q", "-B", branch)
        for name, content in files.items():
            (work / name).parent.mkdir(parents=True, exist_ok=True)
            (work / name).write_bytes(content)
        git("-C", str(work), "add", "-A")
        commit(work, "more")
        git("-C", str(work), "push", "-q", self.authed_url(repo), f"{branch}:{branch}")
        return head(work)


def git(*args: str, cwd: Path | None = None) -> str:
    env = {**os.environ, "GIT_TERMINAL_PROMPT": "0"}
    done = subprocess.run(["git", *args], cwd=cwd, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise AssertionError(f"git {' '.join(args)} failed: {done.stderr}")
    return done.stdout


def commit(work: Path, message: str) -> None:
    author = ["-c", "user.name=Test", "-c", "user.email=test@example.invalid"]
    git("-C", str(work), *author, "commit", "-q", "--allow-empty", "-m", message)


def head(work: Path) -> str:
    return git("-C", str(work), "rev-parse", "HEAD").strip()


@contextlib.contextmanager
def git_server(
    root: Path, username: str = "git-user", password: str = "git-pass"
) -> Iterator[GitServer]:
    """nginx + fcgiwrap + git http-backend on a free loopback port, until the block ends."""
    for binary in ("nginx", "fcgiwrap"):
        if shutil.which(binary) is None and not Path(f"/usr/sbin/{binary}").exists():
            raise AssertionError(SETUP_HINT)
    for sub in ("repos", "work", "tmp"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    (root / "htpasswd").write_text(f"{username}:{{PLAIN}}{password}\n")
    port = free_port()
    user = "user root;" if os.geteuid() == 0 else ""
    conf = NGINX_CONF.format(root=root, port=port, backend=HTTP_BACKEND, user=user)
    (root / "nginx.conf").write_text(conf)
    with _process(["fcgiwrap", "-s", f"unix:{root}/fcgiwrap.sock"], root / "fcgiwrap.log"):
        _wait_for(lambda: (root / "fcgiwrap.sock").exists(), "fcgiwrap's socket")
        nginx = ["nginx", "-e", str(root / "nginx-error.log"), "-c", str(root / "nginx.conf")]
        with _process([*nginx, "-g", "daemon off;"], root / "nginx.log"):
            _wait_for(lambda: _answers(port), "nginx")
            yield GitServer(root, port, username, password)


@contextlib.contextmanager
def _process(argv: list[str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    path = os.environ.get("PATH", "") + ":/usr/sbin:/sbin"
    with log.open("wb") as out:
        process = subprocess.Popen(
            argv, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, "PATH": path}
        )
    try:
        yield process
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _answers(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
        return True
    return False


def _wait_for(condition: object, what: str) -> None:
    ends = time.monotonic() + START_DEADLINE
    while not condition():  # type: ignore[operator]
        if time.monotonic() > ends:
            raise AssertionError(f"the git server's {what} did not come up")
        time.sleep(0.02)
