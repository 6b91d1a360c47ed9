"""The tag tower gives each request it lets through the egress proxy, and checks when the
request's end is reported (docs/egress.md, "How much").

Squid's log line, which reports a request's end, carries no token: whoever reaches tower's
egress listener could otherwise report ends of its own (events, bytes, open requests
closed). So tower's yes carries a tag, which squid keeps with the request (the external
ACL's `tag=`) and writes on its log line (`%et`): `<serial>.<mac>`, the request's serial
number within its job (the job's count of allowed requests) and an HMAC over the proxy
user (job and attempt), the host, the port and that serial, keyed by a secret only tower
holds (`tower_secrets`, shared by every replica). An end whose tag does not verify is
refused; one whose serial is not open (ended already: a replay) closes nothing
(tower/egress/queries.py ENDED).
"""

from __future__ import annotations

import hashlib
import hmac
import re

# 128 bits of HMAC-SHA256, in hex: squid passes it through as one token.
MAC_CHARS = 32
TAG = re.compile(rf"([1-9][0-9]{{0,9}})\.([0-9a-f]{{{MAC_CHARS}}})")
MAX_SERIAL = 2**31 - 1  # job_egress.allowed is an integer


def _mac(key: bytes, user: str, host: str, port: int, serial: int) -> str:
    # NUL cannot occur in any of the fields (a user, a host name, numbers): no ambiguity.
    message = f"{user}\0{host}\0{port}\0{serial}".encode()
    return hmac.new(key, message, hashlib.sha256).hexdigest()[:MAC_CHARS]


def sign(key: bytes, user: str, host: str, port: int, serial: int) -> str:
    """The tag of request `serial` of the proxy user `user` to host:port (host as
    tower/configs/egress.normal_host writes it)."""
    return f"{serial}.{_mac(key, user, host, port, serial)}"


def serial_of(key: bytes, user: str, host: str, port: int, tag: str) -> int | None:
    """The serial a tag names, when tower made it for this user, host and port; None
    for any other text."""
    found = TAG.fullmatch(tag)
    if found is None or int(found.group(1)) > MAX_SERIAL:
        return None
    serial = int(found.group(1))
    if not hmac.compare_digest(found.group(2), _mac(key, user, host, port, serial)):
        return None
    return serial
