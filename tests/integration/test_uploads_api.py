"""POST /uploads through real HTTP against a real tower and its PostgreSQL: files and
archives are streamed, checked before they are kept, and never half-stored."""

from __future__ import annotations

import asyncio
import glob
import hashlib
import io
import os
import tarfile
import tempfile
import zipfile
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from tests.support.cli import parpaing
from tests.support.conditions import until, until_async
from tests.support.live import client_for, live_tower
from tests.support.rss import RssWatch
from tests.support.towers import start_tower
from tower.db.pool import Pool
from tower.settings import Settings
from tower.uploads import service

KEY = "uploads-test-key"
MiB = 1 << 20
TAR = {"Content-Type": "application/x-tar"}
TGZ = {"Content-Type": "application/gzip"}
ZIP = {"Content-Type": "application/zip"}
FILE = {"Content-Type": "application/octet-stream"}


@pytest.fixture
async def client(database_url: str) -> AsyncIterator[httpx.AsyncClient]:
    settings = Settings(
        database_url=database_url,
        tower_runner="simulated",
        tower_api_key=KEY,
        worker_workspace_size="1m",  # the expansion cap, small enough to test bombs
        max_upload_bytes=MiB,
    )
    async with live_tower(settings) as url, client_for(url, KEY) as client:
        yield client


def tar_of(*members: tuple[tarfile.TarInfo, bytes], gz: bool = False) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz" if gz else "w") as archive:
        for info, data in members:
            info.size = len(data) if info.isfile() else 0
            archive.addfile(info, io.BytesIO(data) if info.isfile() else None)
    return buffer.getvalue()


def entry(name: str, kind: bytes = tarfile.REGTYPE, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = link
    return info


def zip_of(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return buffer.getvalue()


async def count_rows(pool: Pool) -> tuple[int, int]:
    async with pool.acquire() as connection:
        uploads = await connection.fetchval("SELECT count(*) FROM uploads")
        chunks = await connection.fetchval("SELECT count(*) FROM upload_chunks")
    return uploads, chunks


async def test_a_file_goes_in_and_its_facts_come_back(
    client: httpx.AsyncClient, pool: Pool
) -> None:
    data = os.urandom(300_000)
    created = await client.post("/uploads?filename=notes.bin", content=data, headers=FILE)
    assert created.status_code == 201, created.text
    upload = created.json()
    assert upload["size"] == len(data)
    assert upload["sha256"] == hashlib.sha256(data).hexdigest()
    assert (upload["kind"], upload["filename"], upload["entries"]) == ("file", "notes.bin", 1)
    assert (await client.get(f"/uploads/{upload['upload_id']}")).json() == upload
    async with pool.acquire() as connection:
        chunks = await connection.fetch(
            "SELECT data FROM upload_chunks WHERE upload_id = $1 ORDER BY seq", upload["upload_id"]
        )
    assert b"".join(bytes(row["data"]) for row in chunks) == data


async def test_archives_are_counted_and_deletion_is_final(client: httpx.AsyncClient) -> None:
    tgz = tar_of((entry("src", tarfile.DIRTYPE), b""), (entry("src/a.py"), b"print(1)\n"), gz=True)
    archive = await client.post("/uploads", content=tgz, headers=TGZ)
    zipped = await client.post(
        "/uploads", content=zip_of({"a.txt": b"a", "b/c.txt": b"c"}), headers=ZIP
    )
    assert (archive.status_code, archive.json()["entries"]) == (201, 2)
    assert (zipped.status_code, zipped.json()["entries"]) == (201, 2)
    upload_id = archive.json()["upload_id"]
    assert (await client.delete(f"/uploads/{upload_id}")).status_code == 204
    assert (await client.get(f"/uploads/{upload_id}")).status_code == 404
    assert (await client.get("/uploads/up-not-an-id")).status_code == 404


@pytest.mark.parametrize(
    ("members", "problem"),
    [
        ([(entry("../escape.txt"), b"x")], "climbs out"),
        ([(entry("/etc/cron.d/x"), b"x")], "absolute path"),
        ([(entry("link", tarfile.SYMTYPE, "../../etc/passwd"), b"")], "points outside"),
        ([(entry("link", tarfile.SYMTYPE, "/etc/passwd"), b"")], "points outside"),
        ([(entry("hard", tarfile.LNKTYPE, "/etc/shadow"), b"")], "points outside"),
        ([(entry("dev", tarfile.CHRTYPE), b"")], "device"),
        ([(entry("fifo", tarfile.FIFOTYPE), b"")], "device or a pipe"),
    ],
)
async def test_a_hostile_archive_is_refused_naming_the_entry(
    client: httpx.AsyncClient,
    pool: Pool,
    members: list[tuple[tarfile.TarInfo, bytes]],
    problem: str,
) -> None:
    response = await client.post("/uploads", content=tar_of(*members), headers=TAR)
    assert response.status_code == 422, response.text
    assert problem in str(response.json()["detail"])
    assert await count_rows(pool) == (0, 0)


async def test_links_inside_the_workspace_are_kept(client: httpx.AsyncClient) -> None:
    members = [(entry("a.txt"), b"a"), (entry("b", tarfile.SYMTYPE, "a.txt"), b"")]
    response = await client.post("/uploads", content=tar_of(*members), headers=TAR)
    assert response.status_code == 201, response.text


@pytest.mark.parametrize("kind", ["tar.gz", "zip"])
async def test_a_bomb_is_refused_from_its_headers(
    client: httpx.AsyncClient, pool: Pool, kind: str
) -> None:
    zeros = bytes(3 * MiB)  # compresses to a few KB; expands past the 1 MiB cap
    if kind == "zip":
        body, headers = zip_of({"zeros": zeros}), ZIP
    else:
        body, headers = tar_of((entry("zeros"), zeros), gz=True), TGZ
    assert len(body) < 64 * 1024
    response = await client.post("/uploads", content=body, headers=headers)
    assert response.status_code == 422, response.text
    assert "expands past" in str(response.json()["detail"])
    assert await count_rows(pool) == (0, 0)


async def test_bad_requests_say_what_is_wrong(client: httpx.AsyncClient) -> None:
    plain = await client.post("/uploads", content=b"x", headers={"Content-Type": "text/plain"})
    nameless = await client.post("/uploads", content=b"x", headers=FILE)
    slashed = await client.post("/uploads?filename=a/b", content=b"x", headers=FILE)
    garbage = await client.post("/uploads", content=b"not a tar" * 100, headers=TAR)
    assert plain.status_code == 415 and "Content-Type" in plain.json()["detail"]
    assert nameless.status_code == 400 and "filename" in nameless.json()["detail"]
    assert slashed.status_code == 400
    assert garbage.status_code == 422 and "not a readable tar" in str(garbage.json()["detail"])


async def test_past_max_upload_bytes_is_a_413_and_nothing_is_kept(
    client: httpx.AsyncClient, pool: Pool
) -> None:
    response = await client.post("/uploads?filename=big", content=bytes(2 * MiB), headers=FILE)
    assert response.status_code == 413, response.text
    assert "MAX_UPLOAD_BYTES" in response.json()["detail"]
    assert await count_rows(pool) == (0, 0)


async def test_every_route_needs_the_key(client: httpx.AsyncClient) -> None:
    async with httpx.AsyncClient(base_url=str(client.base_url)) as anonymous:
        assert (
            await anonymous.post("/uploads?filename=x", content=b"x", headers=FILE)
        ).status_code == 401
        assert (await anonymous.get("/uploads/up-0")).status_code == 401
        assert (await anonymous.delete("/uploads/up-0")).status_code == 401


def spooled_files() -> list[str]:
    return glob.glob(os.path.join(tempfile.gettempdir(), "parpaing-upload-*"))


# Statements of this database still running or in an open transaction, ours aside.
BUSY = """
SELECT count(*) FROM pg_stat_activity
WHERE datname = current_database() AND pid <> pg_backend_pid() AND state <> 'idle'
"""


@pytest.mark.parametrize(
    ("content_type", "name"),
    [(FILE, "?filename=half"), (TGZ, "")],  # streamed into PostgreSQL; spooled first
)
async def test_a_client_that_aborts_mid_stream_leaves_nothing(
    database_url: str, pool: Pool, content_type: dict[str, str], name: str
) -> None:
    settings = Settings(database_url=database_url, tower_runner="simulated", tower_api_key=KEY)
    before = set(spooled_files())

    class Aborted(Exception):
        pass

    async def half_then_abort() -> AsyncIterator[bytes]:
        for _ in range(8):
            yield bytes(256 * 1024)
        raise Aborted

    async def settled() -> bool:
        async with pool.acquire() as connection:
            busy: int = await connection.fetchval(BUSY)
        return not busy and not set(spooled_files()) - before

    async with live_tower(settings) as url, client_for(url, KEY) as client:
        with pytest.raises(Aborted):
            await client.post(f"/uploads{name}", content=half_then_abort(), headers=content_type)
        # The server learns of the disconnect, rolls its transaction back (a streamed
        # file) or discards its spool file (an archive): wait for that.
        await until_async(settled, "the upload's transaction and spool file are gone")
    assert await count_rows(pool) == (0, 0)


@pytest.mark.slow
async def test_a_200_mb_upload_streams_through_tower(database_url: str, tmp_path: Path) -> None:
    tower = await start_tower(database_url, tmp_path, "uploads", tower_api_key=KEY)
    size = 200 * MiB
    digest = hashlib.sha256()

    async def body() -> AsyncIterator[bytes]:
        piece = os.urandom(MiB)
        for _ in range(size // MiB):
            digest.update(piece)
            yield piece

    try:
        async with RssWatch(tower.pid) as rss, client_for(tower.base_url, KEY) as client:
            client.timeout = httpx.Timeout(300)
            response = await client.post("/uploads?filename=big.bin", content=body(), headers=FILE)
    finally:
        tower.terminate()
    assert response.status_code == 201, response.text
    assert (response.json()["size"], response.json()["sha256"]) == (size, digest.hexdigest())
    print(f"tower RSS +{rss.growth / MiB:.1f} MiB for a 200 MiB upload")
    assert rss.growth < 64 * MiB


async def run_cli(url: str, *args: str) -> tuple[int, str, str]:
    ran = await parpaing(url, *args, api_key=KEY)
    return ran.code, ran.stdout, ran.stderr


async def test_the_cli_uploads_files_archives_and_directories(
    client: httpx.AsyncClient, tmp_path: Path
) -> None:
    url = str(client.base_url)
    single = tmp_path / "notes.txt"
    single.write_text("notes\n")
    tree = tmp_path / "tree"
    (tree / "src").mkdir(parents=True)
    (tree / "src" / "a.py").write_text("print(1)\n")
    (tree / "README.md").write_text("hi\n")
    archive = tmp_path / "bundle.zip"
    archive.write_bytes(zip_of({"x.txt": b"x"}))
    facts = {}
    for path in (single, tree, archive):
        code, out, err = await run_cli(url, "upload", str(path))
        assert code == 0, err
        facts[path.name] = (await client.get(f"/uploads/{out.strip()}")).json()
    assert (facts["notes.txt"]["kind"], facts["notes.txt"]["filename"]) == ("file", "notes.txt")
    assert (facts["tree"]["kind"], facts["tree"]["entries"]) == ("tar.gz", 3)
    assert facts["bundle.zip"]["kind"] == "zip"
    missing = await run_cli(url, "upload", str(tmp_path / "nope"))
    assert missing[0] == 1 and "no such file" in missing[2]


async def test_past_the_uploads_streaming_at_once_a_file_is_spooled_not_held(
    database_url: str,
) -> None:
    """Each streamed upload holds a database connection while its client sends: with
    STREAMED_AT_ONCE clients sending slowly, another file still goes in (through the
    spool) while they hold theirs."""
    settings = Settings(database_url=database_url, tower_runner="simulated", tower_api_key=KEY)
    release = asyncio.Event()

    async def slow() -> AsyncIterator[bytes]:
        yield b"first half "
        await release.wait()
        yield b"second half"

    async with live_tower(settings) as url, client_for(url, KEY) as client:
        held = [
            asyncio.create_task(client.post("/uploads?filename=slow", content=slow(), headers=FILE))
            for _ in range(service.STREAMED_AT_ONCE)
        ]
        await until(service.STREAMING.locked, "the slow uploads streaming")
        quick = await client.post("/uploads?filename=quick", content=b"quick", headers=FILE)
        assert quick.status_code == 201, quick.text
        assert not any(task.done() for task in held)  # still sending
        release.set()
        answers = await asyncio.gather(*held)
    assert [answer.json()["size"] for answer in answers] == [22] * service.STREAMED_AT_ONCE
    assert quick.json()["sha256"] == hashlib.sha256(b"quick").hexdigest()
