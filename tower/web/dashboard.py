"""The dashboard: the static files of ui/ served at /ui, and / sending a browser there.

The files are plain HTML, CSS and JavaScript modules (no build step). In a source
checkout or an editable install they are read from ui/ beside the tower package; an
installed wheel carries them as tower/ui (see setup.py). Only files under that directory
are served, with a Content-Security-Policy that lets the page load nothing but itself:
no inline script, no other origin, so no injected markup can run.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, FastAPI
from fastapi.responses import RedirectResponse
from starlette.staticfiles import StaticFiles
from starlette.types import Message, Receive, Scope, Send

from tower import resources
from tower.web.headers import PAGE_CONTENT_SECURITY_POLICY

MOUNT = "/ui"

CONTENT_SECURITY_POLICY = PAGE_CONTENT_SECURITY_POLICY

router = APIRouter(include_in_schema=False)


@router.get("/")
async def root() -> RedirectResponse:
    return RedirectResponse(MOUNT + "/", status_code=307)


def ui_directory() -> Path:
    """Where the dashboard's files are: inside the package (wheel), else beside it."""
    directory = resources.shipped("ui")
    if not (directory / "index.html").is_file():
        raise RuntimeError(f"dashboard files not found in {directory}")
    return directory


class _DashboardFiles(StaticFiles):
    """StaticFiles (index.html for a directory, /ui redirected to /ui/) plus the CSP."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def send_with_policy(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers.append((b"content-security-policy", CONTENT_SECURITY_POLICY.encode()))
                message = {**message, "headers": headers}
            await send(message)

        await super().__call__(scope, receive, send_with_policy)


def install_dashboard(app: FastAPI) -> None:
    app.include_router(router)
    app.mount(MOUNT, _DashboardFiles(directory=ui_directory(), html=True), name="ui")
