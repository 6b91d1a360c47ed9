"""One HTTP attempt of one delivery, and what it means for the delivery.

2xx: delivered. 410 Gone: the receiver asks us to stop (status 'stopped'). Anything else,
a network error or a timeout: retried with backoff until the attempts run out (then
'failed'). A target refused by the SSRF check fails at once: retrying cannot help.
Redirects are not followed (a redirect could lead anywhere, past the check): a 3xx is a
failed attempt like any other non-2xx.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from dataclasses import dataclass

import httpx

from tower.errors import one_line
from tower.webhooks import signing, target
from tower.webhooks.queries import Answer, Claimed

USER_AGENT = "Parpaing-Webhooks/1"
ERROR_MAX = 500


@dataclass(frozen=True)
class Policy:
    key: bytes
    timeout: float
    allow_private: bool
    max_attempts: int
    retry_base: float
    retry_max: float


def body_of(claimed: Claimed) -> bytes:
    """The payload as sent; jsonb gives keys in a stable order, so retries send the same."""
    return json.dumps(claimed.payload, separators=(",", ":"), ensure_ascii=False).encode()


def backoff(attempt: int, base: float, cap: float) -> float:
    """Seconds before the attempt after `attempt`: exponential, capped, with jitter
    (half fixed, half random) so receivers coming back are not hit all at once."""
    ceiling = min(cap, base * 2.0 ** min(attempt - 1, 62))
    return ceiling / 2 + random.uniform(0, ceiling / 2)


async def attempt(client: httpx.AsyncClient, claimed: Claimed, policy: Policy) -> Answer:
    started = time.monotonic()
    try:
        async with asyncio.timeout(policy.timeout):
            status_code = await _post(client, claimed, policy)
    except target.Refused as refused:
        return Answer("failed", 0, None, f"refused: {refused}", _ms(started))
    except TimeoutError:
        error = f"no answer within {policy.timeout:g}s"
        return _retry_or_fail(claimed, policy, None, error, started)
    except (httpx.HTTPError, target.ResolveFailed, OSError) as failure:
        return _retry_or_fail(claimed, policy, None, _describe(failure), started)
    if 200 <= status_code < 300:
        return Answer("delivered", 0, status_code, None, _ms(started))
    if status_code == 410:
        return Answer(
            "stopped", 0, status_code, "HTTP 410: the receiver asked to stop", _ms(started)
        )
    return _retry_or_fail(claimed, policy, status_code, f"HTTP {status_code}", started)


async def _post(client: httpx.AsyncClient, claimed: Claimed, policy: Policy) -> int:
    pinned = await target.resolve(claimed.url, allow_private=policy.allow_private)
    body = body_of(claimed)
    headers = {
        "content-type": "application/json",
        "user-agent": USER_AGENT,
        "host": pinned.host_header,
        **signing.headers(policy.key, claimed.delivery_id, int(time.time()), body),
    }
    extensions = {"sni_hostname": pinned.server_name} if pinned.server_name else {}
    request = client.build_request(
        "POST", pinned.url, headers=headers, content=body, extensions=extensions
    )
    # The receiver's body is not read: only its status counts.
    response = await client.send(request, stream=True)
    await response.aclose()
    return response.status_code


def _retry_or_fail(
    claimed: Claimed, policy: Policy, status_code: int | None, error: str, started: float
) -> Answer:
    if claimed.attempt >= policy.max_attempts:
        return Answer("failed", 0, status_code, error, _ms(started))
    delay = backoff(claimed.attempt, policy.retry_base, policy.retry_max)
    return Answer("pending", delay, status_code, error, _ms(started))


def _describe(failure: BaseException) -> str:
    return one_line(failure, ERROR_MAX)


def _ms(started: float) -> int:
    return int((time.monotonic() - started) * 1000)


def new_client() -> httpx.AsyncClient:
    # No proxy from the environment: the request must go to the address just checked.
    # No kept-alive connections: one to an address must not be reused for another host
    # name behind it (its TLS name was checked for the first).
    limits = httpx.Limits(max_keepalive_connections=0)
    return httpx.AsyncClient(trust_env=False, follow_redirects=False, timeout=None, limits=limits)
