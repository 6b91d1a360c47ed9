"""Pieces of the egress proxy's end-to-end tests: names of their own on the shared daemon,
and web sites on this host that only the proxy can reach, under names only it resolves.

The sites listen on this host's address on the proxy's own network (EGRESS_NET), which
no worker is on (workers have no network at all); the proxy container is given their
names as extra hosts (EGRESS_EXTRA_HOSTS), so inside a worker they resolve nowhere.
Nothing here is ever sent off this host.
"""

from __future__ import annotations

import base64
import contextlib
import datetime
import hashlib
import ssl
import tempfile
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import docker
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from docker.errors import APIError, NotFound

from tower.gateway.container import ensure_egress_network

ALLOWED = "allowed.egress.test"
REFUSED = "refused.egress.test"
CHUNK = 1 << 16


@dataclass(frozen=True)
class EgressNames:
    suffix: str
    container: str
    net: str

    @property
    def socket_volume(self) -> str:
        return f"{self.container}-socket"


@contextlib.contextmanager
def egress_names(client: docker.DockerClient) -> Iterator[EgressNames]:
    """Unique names for one test's proxy; its container, volume and network go after."""
    suffix = uuid.uuid4().hex[:10]
    names = EgressNames(suffix, f"peg-{suffix}", f"parpaing-egress-out-{suffix}")
    try:
        yield names
    finally:
        with contextlib.suppress(NotFound, APIError):
            client.containers.get(names.container).remove(force=True)
        with contextlib.suppress(NotFound, APIError):
            client.volumes.get(names.socket_volume).remove(force=True)
        with contextlib.suppress(NotFound, APIError):
            client.networks.get(names.net).remove()


def proxy_host_address(client: docker.DockerClient, names: EgressNames) -> str:
    """Create the proxy's network now and return this host's address on it."""
    ensure_egress_network(client, names.net)
    details = client.api.inspect_network(names.net)
    return str(details["IPAM"]["Config"][0]["Gateway"])


def egress_settings(
    names: EgressNames, image: str, hosts: dict[str, str], **overrides: Any
) -> dict[str, Any]:
    """Tower settings that run this test's proxy, with `hosts` (name -> address) known
    to it only."""
    values: dict[str, Any] = {
        "egress_managed": True,
        "egress_image": image,
        "egress_container": names.container,
        "egress_net": names.net,
        "egress_socket_volume": names.socket_volume,
        "egress_extra_hosts": ",".join(f"{name}={address}" for name, address in hosts.items()),
        "egress_auth_cache_seconds": 1,
    }
    return {**values, **overrides}


# --- the sites --------------------------------------------------------------------------


@dataclass
class Site:
    """A web site on this host: what it was asked, and how to reach it."""

    address: str
    port: int = 0
    scheme: str = "http"
    # base64 of the SHA-256 of its key (curl --pinnedpubkey), for an https site.
    pin: str = ""
    marker: str = field(default_factory=lambda: f"egress-site-{uuid.uuid4().hex[:8]}")
    hits: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    # /gate answers 503 until this is set, then 200: a job can wait on the test.
    gate: threading.Event = field(default_factory=threading.Event)

    def url(self, host: str, path: str = "/hello") -> str:
        return f"{self.scheme}://{host}:{self.port}{path}"

    def seen(self) -> list[str]:
        with self.lock:
            return list(self.hits)


def _handler(site: Site) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True

        def log_message(self, *_: object) -> None:
            return None

        def do_GET(self) -> None:
            with site.lock:
                site.hits.append(self.path)
            if self.path.startswith("/bytes/"):
                self._bytes(int(self.path.rsplit("/", 1)[1]))
                return
            body = f"{site.marker}\n".encode()
            self.send_response(200 if self.path != "/gate" or site.gate.is_set() else 503)
            self.send_header("content-type", "text/plain")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _bytes(self, size: int) -> None:
            self.send_response(200)
            self.send_header("content-type", "application/octet-stream")
            self.send_header("content-length", str(size))
            self.end_headers()
            block = b"x" * CHUNK
            left = size
            while left > 0:
                self.wfile.write(block[: min(left, CHUNK)])
                left -= CHUNK

    return Handler


@contextlib.contextmanager
def site(address: str, tls_name: str | None = None) -> Iterator[Site]:
    """A site on `address` (a free port); https with a certificate for `tls_name`."""
    found = Site(address, scheme="https" if tls_name else "http")
    server = ThreadingHTTPServer((address, 0), _handler(found))
    server.daemon_threads = True
    with tempfile.TemporaryDirectory(prefix="egress-tls-") as tmp:
        if tls_name is not None:
            context, found.pin = _tls(Path(tmp), tls_name)
            server.socket = context.wrap_socket(server.socket, server_side=True)
        found.port = int(server.server_address[1])
        thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
        thread.start()
        try:
            yield found
        finally:
            server.shutdown()
            server.server_close()
            thread.join()


def _tls(directory: Path, name: str) -> tuple[ssl.SSLContext, str]:
    """A server context with a fresh self-signed certificate for `name`, and its pin."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = directory / "cert.pem", directory / "key.pem"
    cert_file.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_file, key_file)
    spki = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return context, base64.b64encode(hashlib.sha256(spki).digest()).decode()
