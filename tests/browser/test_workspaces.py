"""A job's workspace in the dashboard: files uploaded through the form (the real
POST /uploads) and a repository (cloned from a real git server) reach the job; its
artifacts, diff and published branch come back on its page. The runner is the simulated
one plus the worker's own artifacts code (tests/browser/workspace_runner.py), so tower
stores, serves and publishes what it sends as it does a real worker's frame."""

from __future__ import annotations

import asyncio
import io
import json
import os
import re
import tarfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Locator, Page, Request, expect

from tests.browser.conftest import read_job, screenshot, submit_job
from tests.browser.workspace_runner import Script, WorkspaceRunner
from tests.support.fake_forge import FakeForge, fake_forge
from tests.support.git_server import GitServer, git_server
from tests.support.live import client_for, live_tower
from tower.settings import Settings, new_secrets_key

KEY = "workspace-browser-key-5b7e"
TOKEN = "forge-token-2d9c"
UPLOAD_LIMIT = 1 << 20  # the least MAX_UPLOAD_BYTES can be
HOSTILE_HTML = (
    "<h1>Injected</h1>\n"
    "<script>window.__owned = true</script>\n"
    '<img src=x onerror="window.__owned = true">\n'
)


@pytest.fixture
def api_key() -> str:
    return KEY


@pytest.fixture
def server(tmp_path: Path) -> Iterator[GitServer]:
    with git_server(tmp_path / "git", password=TOKEN) as running:
        yield running


@pytest.fixture
def forge() -> Iterator[FakeForge]:
    with fake_forge() as running:
        yield running


@pytest.fixture
def runner(tmp_path: Path) -> WorkspaceRunner:
    scratch = tmp_path / "runner"
    scratch.mkdir()
    return WorkspaceRunner(scratch)


@pytest.fixture
async def tower_url(database_url: str, runner: WorkspaceRunner) -> AsyncIterator[str]:
    settings = Settings(
        database_url=database_url,
        tower_runner="simulated",
        tower_api_key=KEY,
        secrets_key=new_secrets_key(),
        repo_allow_private=True,  # the git server and the forge are on loopback
        max_upload_bytes=UPLOAD_LIMIT,
    )
    async with live_tower(settings, runner) as url:
        yield url


@pytest.fixture
def requested(page: Page) -> list[str]:
    """Every URL the page asks for: the key must be in none of them."""
    urls: list[str] = []

    def remember(request: Request) -> None:
        urls.append(request.url)

    page.on("request", remember)
    return urls


async def open_page(page: Page, tower_url: str, route: str) -> None:
    """Signed in with the key (kept in sessionStorage, as the sign-in form does)."""
    await page.add_init_script(f"sessionStorage.setItem('parpaing.apiKey', {json.dumps(KEY)})")
    await page.goto(f"{tower_url}/ui/#{route}")


async def api(tower_url: str, method: str, path: str, **kwargs: Any) -> Any:
    async with client_for(tower_url, KEY) as client:
        response = await client.request(method, path, **kwargs)
    assert response.is_success, response.text
    return response.json() if response.content else None


async def add_credential(tower_url: str, server: GitServer, forge: FakeForge) -> None:
    body = {
        "name": "hub",
        "kind": "github",
        "username": server.username,
        "secret": TOKEN,
        "api_url": forge.api_url,
    }
    await api(tower_url, "POST", "/credentials", json=body)


def tar_gz(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for name, content in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(content)
            archive.addfile(info, io.BytesIO(content))
    return buffer.getvalue()


async def upload_id(row: Locator) -> str:
    """The id the tower gave the file uploaded in this row of the form."""
    await expect(row).to_have_attribute("data-state", "uploaded")
    state = await row.locator(".upload-state").text_content()
    found = re.search(r"up-[0-9a-f]+", state or "")
    assert found is not None, state
    return found.group()


async def job_page_id(page: Page) -> str:
    await expect(page).to_have_url(re.compile(r"#/jobs/[\w-]+$"))
    return page.url.rsplit("/", 1)[-1]


async def test_a_file_and_a_tar_gz_uploaded_from_the_form_reach_the_job(
    page: Page, tower_url: str, tmp_path: Path
) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_bytes(b"hello from the form\n")
    bundle = tmp_path / "src.tar.gz"
    bundle.write_bytes(tar_gz({"a.py": b"print(1)\n", "pkg/b.py": b"x = 2\n"}))
    await open_page(page, tower_url, "/submit")
    await page.get_by_label("Agent id").fill("uploader")
    await page.get_by_label("Prompt", exact=True).fill("print done")
    await page.get_by_label("Files", exact=True).set_input_files([notes, bundle])

    note_row = page.locator('.upload[data-file="notes.txt"]')
    tar_row = page.locator('.upload[data-file="src.tar.gz"]')
    await expect(note_row).to_have_attribute("data-state", "uploaded")
    await expect(tar_row).to_have_attribute("data-state", "uploaded")
    await expect(note_row.locator(".upload-size")).to_have_text("20 B")
    await expect(tar_row.locator(".upload-state")).to_contain_text("tar.gz")
    await tar_row.get_by_label("Path in /workspace").fill("src")
    await screenshot(page, "submit-uploads")

    # A file removed from the form is deleted from the tower: no job will name it.
    (tmp_path / "extra.txt").write_text("changed my mind\n")
    await page.get_by_label("Files", exact=True).set_input_files(tmp_path / "extra.txt")
    extra = page.locator('.upload[data-file="extra.txt"]')
    extra_id = await upload_id(extra)
    async with page.expect_response(lambda r: r.request.method == "DELETE") as deleted:
        await page.get_by_role("button", name="Remove extra.txt").click()
    assert (await deleted.value).status == 204
    async with client_for(tower_url, KEY) as client:
        assert (await client.get(f"/uploads/{extra_id}")).status_code == 404
    await page.get_by_role("button", name="Submit job").click()

    job_id = await job_page_id(page)
    await expect(page.locator(".job-status .badge")).to_have_text("completed")
    await expect(page.locator("#job-log")).to_contain_text("staged 2 input(s)")
    job = await read_job(tower_url, job_id, KEY)
    placed = {}
    for one in job["inputs"]:
        upload = await api(tower_url, "GET", f"/uploads/{one['upload']}")
        placed[upload["filename"] or upload["kind"]] = one.get("path", "")
    assert placed == {"notes.txt": "", "tar.gz": "src"}
    inputs = page.locator(".workspace .inputs-list li")
    await expect(inputs).to_have_count(2)
    await expect(inputs.filter(has_text="/workspace/src")).to_have_count(1)


async def test_a_bad_archive_shows_the_towers_422_next_to_the_file_field(
    page: Page, tower_url: str, tmp_path: Path
) -> None:
    evil = tar_gz({"../escape.txt": b"out of the workspace\n"})
    async with client_for(tower_url, KEY) as client:
        refused = await client.post(
            "/uploads", content=evil, headers={"content-type": "application/gzip"}
        )
    assert refused.status_code == 422
    [detail] = refused.json()["detail"]
    message = detail["msg"]
    assert "climbs out" in message
    (tmp_path / "evil.tgz").write_bytes(evil)

    await open_page(page, tower_url, "/submit")
    await page.get_by_label("Files", exact=True).set_input_files(tmp_path / "evil.tgz")
    error = page.locator('[data-field="inputs"] .field-error')
    await expect(error).to_contain_text(message)
    await expect(error).to_contain_text("evil.tgz")
    await expect(page.locator('.upload[data-file="evil.tgz"]')).to_have_attribute(
        "data-state", "failed"
    )
    await expect(page.get_by_label("Files", exact=True)).to_have_attribute("aria-invalid", "true")
    await screenshot(page, "submit-bad-archive")

    # Submitting with it is refused on the page; removing it clears the message.
    await page.get_by_role("button", name="Submit job").click()
    await expect(error).to_contain_text("remove the refused files")
    assert (await api(tower_url, "GET", "/jobs"))["total"] == 0
    await page.get_by_role("button", name="Remove evil.tgz").click()
    await expect(error).to_be_hidden()
    await page.get_by_role("button", name="Submit job").click()
    await job_page_id(page)


async def test_an_upload_over_the_limit_shows_the_towers_413(
    page: Page, tower_url: str, tmp_path: Path
) -> None:
    big = tmp_path / "big.bin"
    big.write_bytes(bytes(2 * UPLOAD_LIMIT))
    await open_page(page, tower_url, "/submit")
    await page.get_by_label("Files", exact=True).set_input_files(big)
    await expect(page.locator('.upload[data-file="big.bin"] .upload-size')).to_have_text("2.0 MiB")
    error = page.locator('[data-field="inputs"] .field-error')
    await expect(error).to_contain_text(f"larger than MAX_UPLOAD_BYTES ({UPLOAD_LIMIT} bytes)")


async def test_an_upload_gone_before_submit_is_refused_next_to_its_file(
    page: Page, tower_url: str, tmp_path: Path
) -> None:
    (tmp_path / "notes.txt").write_text("soon gone\n")
    await open_page(page, tower_url, "/submit")
    await page.get_by_label("Files", exact=True).set_input_files(tmp_path / "notes.txt")
    row = page.locator('.upload[data-file="notes.txt"]')
    await api(tower_url, "DELETE", f"/uploads/{await upload_id(row)}")
    await page.get_by_role("button", name="Submit job").click()
    await expect(row.locator(".field-error")).to_contain_text("unknown or expired upload")
    await expect(row.get_by_label("Path in /workspace")).to_have_attribute("aria-invalid", "true")
    assert (await api(tower_url, "GET", "/jobs"))["total"] == 0


async def test_the_repository_fields_reach_the_job_and_an_unknown_credential_is_refused(
    page: Page, tower_url: str, server: GitServer, forge: FakeForge
) -> None:
    server.create("app", {"README.md": b"hello\n"})
    await add_credential(tower_url, server, forge)
    await open_page(page, tower_url, "/submit")
    await page.get_by_label("Agent id").fill("repo-form")
    await page.get_by_label("Prompt", exact=True).fill("print looked")
    await page.get_by_text("Repository and pull request").click()
    await page.get_by_label("Repository URL").fill(server.url("app"))
    await page.get_by_label("Ref").fill("main")
    credential = page.get_by_label("Credential")
    await expect(credential.locator("option")).to_have_count(2)
    await credential.select_option("hub")
    await page.get_by_label("Output branch").fill("agent/from-form")
    await page.get_by_label("Pull request title").fill("From the form")
    await page.get_by_label("Pull request description").fill("Asked <b>nicely</b>.")

    # The credential goes between the form's reading and the submit: the tower refuses.
    await api(tower_url, "DELETE", "/credentials/hub")
    await page.get_by_role("button", name="Submit job").click()
    error = page.locator('[data-field="repo.credential"] .field-error')
    await expect(error).to_contain_text("unknown credential")
    await expect(credential).to_have_attribute("aria-invalid", "true")
    await expect(credential).to_be_focused()
    await screenshot(page, "submit-unknown-credential")

    await add_credential(tower_url, server, forge)
    await page.get_by_role("button", name="Submit job").click()
    job_id = await job_page_id(page)
    await expect(page.locator(".job-status .badge")).to_have_text("completed")
    job = await read_job(tower_url, job_id, KEY)
    assert job["repo"] == {"url": server.url("app"), "ref": "main", "credential": "hub"}
    assert job["output"] == {
        "branch": "agent/from-form",
        "pull_request": {"title": "From the form", "body": "Asked <b>nicely</b>."},
    }
    workspace = page.locator(".workspace")
    await expect(workspace.locator(".repo-url")).to_have_text(server.url("app"))
    # The agent changed nothing: nothing was pushed, and the page says why.
    await expect(workspace.locator(".publish-reason")).to_contain_text("changed nothing")


def edit_the_app(workspace: Path) -> None:
    """The agent's work: a changed, a new, a hostile, a binary, a linked and a deleted file."""
    (workspace / "README.md").write_text("hello, world\n")
    (workspace / "evil.html").write_text(HOSTILE_HTML)
    (workspace / "logo.bin").write_bytes(bytes(reversed(range(256))))
    (workspace / "data").mkdir()
    (workspace / "data" / "blob.bin").write_bytes(os.urandom(3000))
    (workspace / "link").symlink_to("README.md")
    (workspace / "old.txt").unlink()


async def repository_job(
    tower_url: str, server: GitServer, forge: FakeForge, runner: WorkspaceRunner, script: Script
) -> str:
    server.create(
        "app", {"README.md": b"hello\n", "logo.bin": bytes(range(256)), "old.txt": b"old\n"}
    )
    await add_credential(tower_url, server, forge)
    runner.scripts["artist"] = script
    return await submit_job(
        tower_url,
        KEY,
        agent_id="artist",
        prompt="print edited",
        repo={"url": server.url("app"), "ref": "main", "credential": "hub"},
        output={"branch": "agent/fix", "pull_request": {"title": "Fix it", "body": "Done."}},
    )


async def downloaded(page: Page, button: Locator) -> bytes:
    async with page.expect_download() as started:
        await button.click()
    download = await started.value
    saved = Path(await download.path())
    return await asyncio.to_thread(saved.read_bytes)


async def test_artifacts_diff_and_pull_request_on_the_job_page(
    page: Page,
    tower_url: str,
    server: GitServer,
    forge: FakeForge,
    runner: WorkspaceRunner,
    requested: list[str],
) -> None:
    job_id = await repository_job(tower_url, server, forge, runner, Script(edit_the_app))
    await open_page(page, tower_url, f"/jobs/{job_id}")
    await expect(page.locator(".job-status .badge")).to_have_text("completed")

    files = page.locator(".artifacts tbody tr")
    await expect(files).to_have_count(4)
    paths = await page.locator(".artifacts .artifact-path").all_text_contents()
    assert paths == ["README.md", "data/blob.bin", "evil.html", "logo.bin"]
    blob_row = page.locator('.artifacts tr[data-path="data/blob.bin"]')
    await expect(blob_row.locator(".artifact-size")).to_have_text("2.9 KiB")
    await expect(page.locator('.artifacts tr[data-path="logo.bin"] .artifact-size')).to_have_text(
        "256 B"
    )
    omitted = page.locator('.omitted-list li[data-path="link"]')
    await expect(omitted).to_contain_text("a symbolic link")
    await expect(page.locator(".deleted")).to_contain_text("old.txt")

    async with client_for(tower_url, KEY) as client:
        blob = (await client.get(f"/jobs/{job_id}/artifacts/data/blob.bin")).content
        whole_diff = (await client.get(f"/jobs/{job_id}/diff")).content
    assert len(blob) == 3000
    assert await downloaded(page, blob_row.get_by_role("button")) == blob
    everything = await downloaded(page, page.get_by_role("button", name="Download all (.tar.gz)"))
    with tarfile.open(fileobj=io.BytesIO(everything)) as archive:
        member = archive.extractfile("data/blob.bin")
        assert member is not None and member.read() == blob
    assert await downloaded(page, page.get_by_role("button", name="Download the diff")) == (
        whole_diff
    )

    diff = page.locator(".diff-card")
    readme = diff.locator('.diff-file[data-path="README.md"]')
    await expect(readme.locator(".diff-add")).to_have_text("+hello, world\n")
    await expect(readme.locator(".diff-del")).to_have_text("-hello\n")
    await expect(readme.locator(".diff-hunk")).to_contain_text("@@ -1 +1 @@")
    colours = await readme.evaluate(
        """section => ['diff-add', 'diff-del', 'diff-hunk', 'diff-context'].map((kind) => {
             const line = section.querySelector('.' + kind);
             return line ? getComputedStyle(line).backgroundColor : null; })"""
    )
    assert colours[:2] == ["rgb(230, 246, 234)", "rgb(255, 240, 240)"], colours
    assert colours[2] not in colours[:2]
    evil = diff.locator('.diff-file[data-path="evil.html"]')
    await expect(evil.locator(".badge")).to_have_text("added")
    await expect(evil.locator(".diff-add")).to_contain_text(
        "+<script>window.__owned = true</script>"
    )
    await expect(diff.locator('.diff-file[data-path="logo.bin"] .diff-binary')).to_have_text(
        "binary file changed"
    )
    await expect(diff.locator('.diff-file[data-path="old.txt"] .badge')).to_have_text("deleted")
    assert await diff.locator("script, img, h1").count() == 0
    assert await page.evaluate("window.__owned === undefined")

    published = page.locator(".workspace .published")
    await expect(published.locator(".published-branch")).to_have_text("agent/fix")
    link = published.locator("a.pull-request-link")
    await expect(link).to_have_attribute("href", "https://forge.test/git/app/pull/1")
    await expect(link).to_have_text("#1")
    await screenshot(page, "job-artifacts-diff")
    assert not [url for url in requested if KEY in url]


async def test_a_pull_request_link_that_is_not_http_stays_text(
    page: Page, tower_url: str, server: GitServer, forge: FakeForge, runner: WorkspaceRunner
) -> None:
    hostile = "javascript:window.__owned=true"
    forge.answer = lambda path, body: (201, {"number": 9, "html_url": hostile})  # type: ignore[method-assign]
    job_id = await repository_job(tower_url, server, forge, runner, Script(edit_the_app))
    await open_page(page, tower_url, f"/jobs/{job_id}")
    await expect(page.locator(".job-status .badge")).to_have_text("completed")
    pull = page.locator(".published-pull")
    await expect(pull).to_have_text(hostile)
    assert await pull.locator("a").count() == 0


async def test_a_refused_pull_request_shows_the_forges_message(
    page: Page, tower_url: str, server: GitServer, forge: FakeForge, runner: WorkspaceRunner
) -> None:
    forge.refusal = (422, {"message": "Validation Failed: a pull request already exists"})
    job_id = await repository_job(tower_url, server, forge, runner, Script(edit_the_app))
    await open_page(page, tower_url, f"/jobs/{job_id}")
    await expect(page.locator(".job-status .badge")).to_have_text("failed")
    await expect(page.locator(".publish-error")).to_contain_text("a pull request already exists")
    # The changes are kept all the same.
    await expect(page.locator(".artifacts tbody tr")).to_have_count(4)
    await expect(page.locator('.diff-file[data-path="README.md"]')).to_be_visible()


def write_a_large_file(workspace: Path) -> None:
    lines = "".join(f"line {n:07d} of a generated file\n" for n in range(48_000))
    (workspace / "big.txt").write_text(lines)


async def test_a_diff_over_a_megabyte_is_cut_for_display_and_downloads_whole(
    page: Page, tower_url: str, server: GitServer, forge: FakeForge, runner: WorkspaceRunner
) -> None:
    job_id = await repository_job(tower_url, server, forge, runner, Script(write_a_large_file))
    await open_page(page, tower_url, f"/jobs/{job_id}")
    await expect(page.locator(".job-status .badge")).to_have_text("completed")
    notice = page.locator(".diff-truncated")
    await expect(notice).to_contain_text("only its first 1.0 MiB is shown")
    async with client_for(tower_url, KEY) as client:
        whole = (await client.get(f"/jobs/{job_id}/diff")).content
    assert len(whole) > 1024 * 1024
    shown = await page.locator(".diff-card pre.diff").text_content()
    assert shown is not None and len(shown.encode()) <= 1024 * 1024
    assert whole.decode().startswith(shown)
    await expect(page.locator(".diff-card .diff-add").last).to_contain_text("of a generated file")
    button = notice.get_by_role("button", name="Download the whole diff")
    assert await downloaded(page, button) == whole
