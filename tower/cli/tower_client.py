"""The HTTP side of the client commands: JSON calls and Server-Sent Event streams to a
running tower. Standard library only (urllib), so the commands work wherever tower is
installed."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

from tower.cli.output import CliError

# Longer than the server's keep-alive interval (15 s): a silent stream is a dead one.
STREAM_READ_TIMEOUT = 60.0
# A large upload is checked by tower before it answers (an archive's entries).
UPLOAD_TIMEOUT = 600.0
# A download's each read waits at most this long (the body streams from PostgreSQL).
DOWNLOAD_TIMEOUT = 120.0
DOWNLOAD_CHUNK = 1 << 20


class TowerClient:
    def __init__(self, base_url: str, api_key: str = "", timeout: float = 30.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.api_key = api_key
        self.timeout = timeout

    def call(
        self, method: str, path: str, body: Any = None, *, timeout: float | None = None
    ) -> Any:
        request = urllib.request.Request(
            self.base_url + path, method=method, headers=self._headers(body is not None)
        )
        data = None if body is None else json.dumps(body).encode()
        try:
            with urllib.request.urlopen(request, data, timeout=timeout or self.timeout) as reply:
                return json.loads(reply.read() or b"null")
        except urllib.error.HTTPError as exc:
            raise CliError(_http_error_message(exc), exc.code) from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise CliError(
                f"cannot reach tower at {self.base_url}: {reason} "
                "(is `parpaing serve` running? set TOWER_URL or --url)"
            ) from None

    def send_file(self, path: str, file: Path, content_type: str) -> Any:
        """POST a file as the raw body, streamed from disk (never read whole)."""
        headers = self._headers(False) | {
            "Content-Type": content_type,
            "Content-Length": str(file.stat().st_size),
        }
        request = urllib.request.Request(self.base_url + path, method="POST", headers=headers)
        try:
            with (
                file.open("rb") as body,
                urllib.request.urlopen(request, body, timeout=UPLOAD_TIMEOUT) as reply,
            ):
                return json.loads(reply.read() or b"null")
        except urllib.error.HTTPError as exc:
            raise CliError(_http_error_message(exc), exc.code) from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise CliError(f"uploading {file} to {self.base_url}: {reason}") from None

    def download(self, path: str, sink: BinaryIO) -> int:
        """GET `path` into `sink` a piece at a time (never read whole); bytes written."""
        request = urllib.request.Request(self.base_url + path, headers=self._headers(False))
        written = 0
        try:
            with urllib.request.urlopen(request, timeout=DOWNLOAD_TIMEOUT) as reply:
                while piece := reply.read(DOWNLOAD_CHUNK):
                    sink.write(piece)
                    written += len(piece)
        except urllib.error.HTTPError as exc:
            raise CliError(_http_error_message(exc), exc.code) from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise CliError(f"downloading {path} from {self.base_url}: {reason}") from None
        return written

    def events(self, path: str, last_event_id: str = "") -> Iterator[tuple[str, str, Any]]:
        """(id, event, data) for each Server-Sent Event of `path`, until it closes."""
        headers = self._headers(False) | {"Accept": "text/event-stream"}
        if last_event_id:
            headers["Last-Event-ID"] = last_event_id
        request = urllib.request.Request(self.base_url + path, headers=headers)
        try:
            reply = urllib.request.urlopen(request, timeout=STREAM_READ_TIMEOUT)
        except urllib.error.HTTPError as exc:
            raise CliError(_http_error_message(exc), exc.code) from None
        except urllib.error.URLError as exc:
            raise CliError(f"cannot reach tower at {self.base_url}: {exc.reason}") from None
        with reply:
            yield from server_sent_events(reply)

    def _headers(self, has_body: bool) -> dict[str, str]:
        headers = {"Accept": "application/json"}
        if has_body:
            headers["Content-Type"] = "application/json"
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        return headers


def server_sent_events(lines: Iterable[bytes]) -> Iterator[tuple[str, str, Any]]:
    """(id, event, JSON data) for each event in a text/event-stream body; comments
    (the server's keep-alives) and events without data are skipped."""
    fields: dict[str, str] = {}
    for raw in lines:
        line = raw.decode("utf-8").rstrip("\r\n")
        if line and not line.startswith(":"):
            name, _, value = line.partition(":")
            fields[name] = value.removeprefix(" ")
        elif not line and "data" in fields:
            yield (
                fields.get("id", ""),
                fields.get("event", "message"),
                json.loads(fields["data"]),
            )
            fields = {}


def _http_error_message(exc: urllib.error.HTTPError) -> str:
    try:
        detail = json.loads(exc.read()).get("detail")
    except (ValueError, AttributeError):
        detail = None
    return f"HTTP {exc.code}: {_describe_detail(detail) or exc.reason}"


def _describe_detail(detail: Any) -> str:
    # FastAPI's validation errors are a list of {loc, msg}: one "field: message" each.
    if isinstance(detail, list):
        return "; ".join(_describe_item(item) for item in detail)
    return str(detail or "")


def _describe_item(item: Any) -> str:
    if not isinstance(item, dict):
        return str(item)
    where = ".".join(str(part) for part in item.get("loc", ()) if part != "body")
    return f"{where}: {item.get('msg', '')}" if where else str(item.get("msg", ""))
