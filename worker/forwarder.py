"""Loopback to the gateway's Unix socket: a worker's only way to a provider.

A worker container has no network device but `lo` (network_mode none). The gateway's
nginx listens on a Unix socket in a volume mounted read-only into every worker; engines
speak HTTP to protocol.WORKER_GATEWAY_URL (127.0.0.1:GATEWAY_PORT), and each connection
accepted there is joined to a new connection to that socket. Bytes are copied both ways
as they arrive, one thread per direction, so streamed answers (server-sent events) pass
unbuffered; when one side stops sending, the other side's sending is shut (half-close),
and when either side fails, both are cut. It knows nothing of HTTP.

Standard library only (the image's python3). worker.py starts it before its ready line,
so it listens before any engine can connect.
"""

from __future__ import annotations

import contextlib
import socket
import threading

CHUNK = 64 * 1024
BACKLOG = 128


def start(port: int, socket_path: str) -> socket.socket:
    """Listen on 127.0.0.1:`port` now; accept and forward on a daemon thread from then on.
    Returns the listening socket (closing it stops accepting)."""
    listener = socket.create_server(("127.0.0.1", port), backlog=BACKLOG)
    accepting = threading.Thread(
        target=_accept_loop, args=(listener, socket_path), name="forwarder", daemon=True
    )
    accepting.start()
    return listener


def _accept_loop(listener: socket.socket, socket_path: str) -> None:
    while True:
        try:
            client, _ = listener.accept()
        except OSError:
            return  # the listener was closed
        threading.Thread(target=_forward, args=(client, socket_path), daemon=True).start()


def _forward(client: socket.socket, socket_path: str) -> None:
    upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        upstream.connect(socket_path)
    except OSError:
        # No gateway behind the socket: the engine sees its connection closed, as it
        # would a gateway that is down, and reports (or retries) it.
        _close(client, upstream)
        return
    with contextlib.suppress(OSError):
        client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    answers = threading.Thread(target=_copy, args=(upstream, client), daemon=True)
    answers.start()
    _copy(client, upstream)
    answers.join()
    _close(client, upstream)


def _copy(source: socket.socket, target: socket.socket) -> None:
    """Copy until `source` ends its sending, then end `target`'s; on a failure of either,
    cut both, which also wakes the thread copying the other way."""
    try:
        while data := source.recv(CHUNK):
            target.sendall(data)
    except OSError:
        for side in (source, target):
            with contextlib.suppress(OSError):
                side.shutdown(socket.SHUT_RDWR)
        return
    with contextlib.suppress(OSError):
        target.shutdown(socket.SHUT_WR)


def _close(*sockets: socket.socket) -> None:
    for each in sockets:
        with contextlib.suppress(OSError):
            each.close()
