"""What a tower refuses before it reads a request's body, measured on a real tower process.

A body is read and parsed before a route's dependencies run, so the key check alone let a
300 MB anonymous `POST /jobs` take a tower from 109 MB to 1 GB before its 401. The request
gate (tower/web/gate.py) answers before the body is read; MAX_REQUEST_BYTES caps every
body, announced or streamed; prompt limits count UTF-8 bytes, not characters.

The bodies here are generated chunk by chunk over a raw socket (never held whole, here or
there); the client stops sending as soon as the answer comes, as a real one would.
"""

from __future__ import annotations

import asyncio
import json
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.rss import RssWatch
from tests.support.towers import TowerProcess, start_tower
from tower.jobs.schemas import PROMPT_MAX, SYSTEM_PROMPT_MAX

pytestmark = pytest.mark.slow

KEY = "gate-test-key"
MiB = 1 << 20
CAP = 128 * MiB  # MAX_REQUEST_BYTES's default
DEADLINE = 120.0  # a bound on one request, not an expectation of speed
EURO = "€"  # one character, three UTF-8 bytes


@pytest.fixture
async def tower(database_url: str, tmp_path: Path) -> Any:
    process = await start_tower(database_url, tmp_path, "gate", tower_api_key=KEY)
    try:
        yield process
    finally:
        process.terminate()


def _job_body(field: str, piece: bytes, pieces: int) -> Iterator[bytes]:
    """A POST /jobs body whose `field` is `piece` repeated: one piece in memory at a time."""
    yield b'{"agent_id": "a", "engine": "claude-code", "' + field.encode() + b'": "'
    for _ in range(pieces):
        yield piece
    yield b'"}'


async def _post(
    tower: TowerProcess,
    chunks: Iterator[bytes],
    *,
    key: str | None = None,
    content_length: int | None = None,
) -> tuple[int, dict[str, str], Any, int]:
    """POST /jobs: (status, headers, JSON body, bytes of body sent before the answer).
    Chunked unless `content_length` is given."""
    url = urllib.parse.urlsplit(tower.base_url)
    reader, writer = await asyncio.open_connection(url.hostname, url.port)
    head = ["POST /jobs HTTP/1.1", f"Host: {url.netloc}", "Content-Type: application/json"]
    if key is not None:
        head.append(f"Authorization: Bearer {key}")
    if content_length is None:
        head.append("Transfer-Encoding: chunked")
    else:
        head.append(f"Content-Length: {content_length}")
    writer.write(("\r\n".join(head) + "\r\n\r\n").encode())
    answer = asyncio.create_task(_read_response(reader))
    sent = 0
    try:
        async with asyncio.timeout(DEADLINE):
            try:
                for chunk in chunks:
                    if answer.done():
                        break
                    if content_length is None:
                        writer.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                    else:
                        writer.write(chunk)
                    await writer.drain()
                    sent += len(chunk)
                else:
                    if content_length is None:
                        writer.write(b"0\r\n\r\n")
                    await writer.drain()
            except ConnectionError:
                pass  # the tower answered and closed: the answer is read below
            status, headers, body = await answer
    finally:
        answer.cancel()
        writer.close()
    return status, headers, body, sent


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], Any]:
    head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
    status = int(head[0].split()[1])
    headers = {}
    for line in head[1:]:
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    body = await reader.readexactly(int(headers["content-length"]))
    return status, headers, json.loads(body)


async def test_a_body_without_the_key_is_refused_before_it_is_read(tower: TowerProcess) -> None:
    piece = b"x" * MiB
    started = time.monotonic()
    async with RssWatch(tower.pid) as rss:
        status, headers, body, sent = await _post(tower, _job_body("prompt", piece, 300))
    print(
        f"401 after {sent / MiB:.0f} MiB sent in {time.monotonic() - started:.1f} s; "
        f"RSS {rss.before / MiB:.0f} MiB -> peak {rss.peak / MiB:.0f} MiB "
        f"(+{rss.growth / MiB:.1f} MiB)"
    )
    assert status == 401
    assert body == {"detail": "Missing or invalid API key"}
    assert headers["www-authenticate"] == "Bearer"
    assert rss.growth < 32 * MiB


async def test_a_wrong_key_is_refused_before_the_body_too(tower: TowerProcess) -> None:
    # How much of the body goes out before the answer is read depends on timing (the
    # server drains it); what it must not do is read it into memory.
    async with RssWatch(tower.pid) as rss:
        status, headers, _, _ = await _post(
            tower, _job_body("prompt", b"x" * MiB, 300), key="not-" + KEY
        )
    assert status == 401
    assert headers["www-authenticate"] == "Bearer"
    assert rss.growth < 32 * MiB


async def test_an_announced_body_over_the_cap_is_refused_at_once(tower: TowerProcess) -> None:
    # Only the head is sent: the answer comes from Content-Length alone, before any body.
    # (Sending the body meanwhile would race the tower's close: a reset before the read.)
    status, _, body, sent = await _post(tower, iter(()), key=KEY, content_length=CAP + 1)
    assert status == 413
    assert "MAX_REQUEST_BYTES" in body["detail"]
    assert sent == 0


async def test_a_streamed_body_is_cut_when_it_passes_the_cap(tower: TowerProcess) -> None:
    async with RssWatch(tower.pid) as rss:
        status, _, body, _ = await _post(tower, _job_body("prompt", b"x" * MiB, 200), key=KEY)
    assert status == 413
    assert "MAX_REQUEST_BYTES" in body["detail"]
    # How much went out before the answer was read is timing (the server drains the
    # rest); the app reads what it is sent up to the cap, no further.
    assert rss.growth < CAP + 64 * MiB


async def test_the_prompt_limit_counts_utf8_bytes(tower: TowerProcess) -> None:
    # 34 M characters (a third of the character limit), 102 MB: over the byte limit.
    piece = (EURO * MiB).encode()
    pieces = PROMPT_MAX // (3 * MiB) + 2
    assert pieces * MiB < PROMPT_MAX < pieces * len(piece) < CAP
    status, _, body, _ = await _post(tower, _job_body("prompt", piece, pieces), key=KEY)
    assert status == 422
    assert [error["loc"] for error in body["detail"]] == [["body", "prompt"]]
    assert "bytes" in body["detail"][0]["msg"]


async def test_the_system_prompt_limit_counts_utf8_bytes(tower: TowerProcess) -> None:
    characters = SYSTEM_PROMPT_MAX // 2
    status, _, body, _ = await _post(
        tower, _job_body("system_prompt", (EURO * characters).encode(), 1), key=KEY
    )
    assert status == 422
    assert [error["loc"] for error in body["detail"]] == [["body", "system_prompt"]]
