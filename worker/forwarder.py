"""Loopback to the gateway's Unix socket: a worker's only way to a provider (and, on a
second port, to the egress proxy's socket: docs/egress.md).

A worker container has no network device but `lo` (network_mode none). The gateway's
nginx listens on a Unix socket in a volume mounted read-only into every worker; engines
speak HTTP to protocol.WORKER_GATEWAY_URL (127.0.0.1:GATEWAY_PORT), and each connection
accepted there is joined to a new connection to that socket. Bytes are moved both ways
as they arrive, one thread per direction (with splice(2) through a pipe, so they never
enter this process; recv/sendall where the kernel cannot), so streamed answers
(server-sent events) pass unbuffered; when one side stops sending, the other side's
sending is shut (half-close), and when either side fails, both are cut. It knows nothing
of HTTP.

Standard library only (the image's python3). worker.py starts it before its ready line,
so it listens before any engine can connect.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import socket
import threading

CHUNK = 64 * 1024
BACKLOG = 128
# splice(2) moves up to a pipe's size at a time; Linux lets a user grow one to 1 MiB.
PIPE_BYTES = 1024 * 1024
F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)
# What splice(2) answers for a pair of files it cannot join: copy by hand instead.
UNSPLICEABLE = frozenset({errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP})


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
        _move(source, target)
    except OSError:
        for side in (source, target):
            with contextlib.suppress(OSError):
                side.shutdown(socket.SHUT_RDWR)
        return
    with contextlib.suppress(OSError):
        target.shutdown(socket.SHUT_WR)


def _move(source: socket.socket, target: socket.socket) -> None:
    """Every byte `source` sends, to `target`, as it comes. Through a pipe with splice(2)
    where the kernel can: the bytes never enter this process (a download through the
    egress proxy is several times cheaper so); else with recv and sendall."""
    try:
        pipe = os.pipe()
    except OSError:
        pipe = None
    if pipe is None:
        _recv_send(source, target)
        return
    try:
        _splice(source, target, pipe)
    finally:
        for end in pipe:
            os.close(end)


def _splice(source: socket.socket, target: socket.socket, pipe: tuple[int, int]) -> None:
    read_end, write_end = pipe
    with contextlib.suppress(OSError):  # a larger pipe, fewer calls (Linux only)
        fcntl.fcntl(write_end, F_SETPIPE_SZ, PIPE_BYTES)
    while True:
        try:
            moved = os.splice(source.fileno(), write_end, PIPE_BYTES)
        except OSError as error:
            if error.errno not in UNSPLICEABLE:
                raise
            # Not spliceable here: copy by hand from now on (nothing was moved yet).
            _recv_send(source, target)
            return
        if moved == 0:
            return  # `source` ended its sending
        while moved:
            moved -= os.splice(read_end, target.fileno(), moved)


def _recv_send(source: socket.socket, target: socket.socket) -> None:
    while data := source.recv(CHUNK):
        target.sendall(data)


def _close(*sockets: socket.socket) -> None:
    for each in sockets:
        with contextlib.suppress(OSError):
            each.close()
