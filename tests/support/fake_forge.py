"""A scripted forge API for tests: answers GitHub's `POST /repos/{o}/{r}/pulls` and
GitLab's `POST /projects/{id}/merge_requests` as the real ones do (201 and the new
request's URL), or refuses with a scripted status and message; records every call."""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class ForgeCall:
    path: str
    headers: dict[str, str]
    body: dict[str, Any]


@dataclass
class FakeForge:
    port: int
    calls: list[ForgeCall] = field(default_factory=list)
    refusal: tuple[int, dict[str, Any]] | None = None

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api"

    def answer(self, path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        if self.refusal is not None:
            return self.refusal
        number = len(self.calls)
        if path.endswith("/pulls"):
            repo = path.removeprefix("/api/repos/").removesuffix("/pulls")
            return 201, {"number": number, "html_url": f"https://forge.test/{repo}/pull/{number}"}
        if path.endswith("/merge_requests"):
            return 201, {"iid": number, "web_url": f"https://forge.test/mr/{number}"}
        return 404, {"message": "Not Found"}


@contextlib.contextmanager
def fake_forge() -> Iterator[FakeForge]:
    forge = FakeForge(0)

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("content-length") or 0)
            body = json.loads(self.rfile.read(length) or b"{}")
            headers = {name.lower(): value for name, value in self.headers.items()}
            forge.calls.append(ForgeCall(self.path, headers, body))
            status, answer = forge.answer(self.path, body)
            encoded = json.dumps(answer).encode()
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(encoded)))
            self.end_headers()
            self.wfile.write(encoded)

        def log_message(self, *_: Any) -> None:
            return None

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    forge.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield forge
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
