"""Opening a pull request (GitHub REST) or a merge request (GitLab REST) for a branch tower
pushed. The forge's API is called like a webhook target: its address checked and pinned,
no redirects, a time limit, and a bounded read of its answer."""

from __future__ import annotations

import json
import urllib.parse
from dataclasses import dataclass
from typing import Any

import httpx

from tower.credentials.service import Credential
from tower.errors import one_line
from tower.webhooks.target import Refused, ResolveFailed, resolve
from tower.workspaces.git import RepoFailed

ANSWER_MAX = 1 << 20
TIMEOUT_SECONDS = 30.0
USER_AGENT = "Parpaing/1"


@dataclass(frozen=True)
class PullRequest:
    title: str
    body: str


@dataclass(frozen=True)
class Opened:
    url: str
    number: int | None


async def open_pull_request(
    credential: Credential,
    repo_url: str,
    branch: str,
    base: str,
    pull: PullRequest,
    allow_private: bool,
) -> Opened:
    if credential.kind not in ("github", "gitlab") or not credential.api_url:
        raise RepoFailed(
            f"credential {credential.name!r} is a {credential.kind} credential: "
            "a pull request needs a github or gitlab one"
        )
    path = repo_path(repo_url)
    if credential.kind == "github":
        call = _github(credential, path, branch, base, pull)
    else:
        call = _gitlab(credential, path, branch, base, pull)
    answer = await _post(call, allow_private)
    return Opened(str(answer.get(call.url_field) or ""), _number(answer, call.number_field))


def repo_path(repo_url: str) -> str:
    """owner/name (or group/subgroup/name) from the repository's URL."""
    path = urllib.parse.urlsplit(repo_url).path.strip("/")
    return path.removesuffix(".git")


@dataclass(frozen=True)
class _Call:
    url: str
    headers: dict[str, str]
    body: dict[str, Any]
    url_field: str
    number_field: str


def _github(credential: Credential, path: str, branch: str, base: str, pull: PullRequest) -> _Call:
    return _Call(
        url=f"{credential.api_url}/repos/{path}/pulls",
        headers={
            "authorization": f"Bearer {credential.secret}",
            "accept": "application/vnd.github+json",
            "x-github-api-version": "2022-11-28",
        },
        body={"title": pull.title, "body": pull.body, "head": branch, "base": base},
        url_field="html_url",
        number_field="number",
    )


def _gitlab(credential: Credential, path: str, branch: str, base: str, pull: PullRequest) -> _Call:
    project = urllib.parse.quote(path, safe="")
    return _Call(
        url=f"{credential.api_url}/projects/{project}/merge_requests",
        headers={"private-token": credential.secret},
        body={
            "title": pull.title,
            "description": pull.body,
            "source_branch": branch,
            "target_branch": base,
        },
        url_field="web_url",
        number_field="iid",
    )


async def _post(call: _Call, allow_private: bool) -> dict[str, Any]:
    try:
        pinned = await resolve(call.url, allow_private=allow_private, setting="REPO_ALLOW_PRIVATE")
    except (Refused, ResolveFailed) as error:
        raise RepoFailed(f"the forge's API is refused: {error}") from None
    headers = {**call.headers, "host": pinned.host_header, "user-agent": USER_AGENT}
    extensions = {"sni_hostname": pinned.server_name} if pinned.server_name else {}
    async with httpx.AsyncClient(trust_env=False, follow_redirects=False) as client:
        request = client.build_request(
            "POST", pinned.url, headers=headers, json=call.body, extensions=extensions
        )
        try:
            response = await client.send(request, stream=True)
            answer = await _bounded(response)
        except httpx.HTTPError as error:
            raise RepoFailed(f"the forge's API did not answer: {one_line(error)}") from None
    return _checked(response.status_code, answer)


async def _bounded(response: httpx.Response) -> bytes:
    read = bytearray()
    async for chunk in response.aiter_bytes():
        read += chunk
        if len(read) > ANSWER_MAX:
            break
    await response.aclose()
    return bytes(read[:ANSWER_MAX])


def _checked(status: int, answer: bytes) -> dict[str, Any]:
    try:
        document = json.loads(answer) if answer else {}
    except ValueError:
        document = {}
    if not isinstance(document, dict):
        document = {}
    if not 200 <= status < 300:
        raise RepoFailed(f"the forge refused the pull request: HTTP {status}: {_message(document)}")
    return document


def _message(document: dict[str, Any]) -> str:
    message = document.get("message") or document.get("error") or "no message"
    errors = document.get("errors")
    if isinstance(errors, list) and errors:
        message = f"{message} ({json.dumps(errors)[:300]})"
    return one_line(Exception(str(message)), 300)


def _number(answer: dict[str, Any], field: str) -> int | None:
    value = answer.get(field)
    return value if isinstance(value, int) else None
