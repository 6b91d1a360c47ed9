"""worker/forwarder.py: a worker's loopback port joined to the gateway's Unix socket.

A real forwarder on a free loopback port and a real Unix socket server in a temporary
directory: bytes pass both ways as they come (a streamed answer is read before the server
has finished it), a half-close passes through, and without a socket the client's
connection is closed rather than left hanging.
"""

from __future__ import annotations

import importlib.util
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

FORWARDER = Path(__file__).resolve().parents[2] / "worker" / "forwarder.py"
TIMEOUT = 10.0


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("forwarder", FORWARDER)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


forwarder = _load()


@pytest.fixture
def socket_path(tmp_path: Path) -> Path:
    return tmp_path / "gateway.sock"


@pytest.fixture
def port(socket_path: Path) -> Iterator[int]:
    listener = forwarder.start(0, str(socket_path))
    try:
        yield int(listener.getsockname()[1])
    finally:
        listener.close()


def _serve_once(path: Path, handle: object) -> threading.Thread:
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen(1)

    def run() -> None:
        with server:
            connection, _ = server.accept()
            with connection:
                handle(connection)  # type: ignore[operator]

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def _read_until_closed(connection: socket.socket) -> bytes:
    received = b""
    while chunk := connection.recv(4096):
        received += chunk
    return received


def test_a_streamed_answer_arrives_piece_by_piece_and_a_half_close_passes(
    port: int, socket_path: Path
) -> None:
    second_piece = threading.Event()
    seen: list[bytes] = []

    def gateway(connection: socket.socket) -> None:
        seen.append(_read_until_closed(connection))  # ends at the client's half-close
        connection.sendall(b"event: one\n\n")
        second_piece.wait(TIMEOUT)  # the first piece must have arrived without this one
        connection.sendall(b"event: two\n\n")

    server = _serve_once(socket_path, gateway)
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as client:
        client.sendall(b"POST /anthropic/v1/messages HTTP/1.1\r\n\r\n" + b"x" * 300_000)
        client.shutdown(socket.SHUT_WR)
        first = client.recv(4096)
        second_piece.set()
        rest = _read_until_closed(client)
    server.join(TIMEOUT)
    assert seen == [b"POST /anthropic/v1/messages HTTP/1.1\r\n\r\n" + b"x" * 300_000]
    assert first == b"event: one\n\n"
    assert rest == b"event: two\n\n"


def test_without_a_gateway_socket_the_connection_is_closed(port: int) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as client:
        client.sendall(b"GET /health HTTP/1.1\r\n\r\n")
        try:
            answer = _read_until_closed(client)
        except ConnectionResetError:  # closed with the request unread: a reset
            answer = b""
    assert answer == b""


def test_it_listens_on_loopback_only(port: int) -> None:
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", port)) == 0
    listeners = Path("/proc/net/tcp").read_text().splitlines()[1:]
    local = [line.split()[1] for line in listeners if line.split()[3] == "0A"]
    assert f"0100007F:{port:04X}" in local
    assert f"00000000:{port:04X}" not in local


def test_megabytes_pass_whole_both_ways(socket_path: Path, port: int) -> None:
    """What splice(2) moves arrives whole and in order, each way (a download through the
    egress proxy, an upload to the gateway)."""
    upload = bytes(range(256)) * (12 * 4096)  # 12 MiB
    download = bytes(reversed(range(256))) * (20 * 4096)  # 20 MiB
    got: dict[str, bytes] = {}

    def handle(connection: socket.socket) -> None:
        got["upload"] = _read_all(connection)  # until the client's half-close
        connection.sendall(download)

    server = _serve_once(socket_path, handle)
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as client:
        sender = threading.Thread(target=client.sendall, args=(upload,))
        sender.start()
        sender.join(TIMEOUT)
        client.shutdown(socket.SHUT_WR)
        received = _read_all(client)
    server.join(TIMEOUT)
    assert got["upload"] == upload
    assert received == download


def _read_all(connection: socket.socket) -> bytes:
    pieces = []
    while chunk := connection.recv(1 << 20):
        pieces.append(chunk)
    return b"".join(pieces)
