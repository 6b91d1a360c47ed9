"""Swagger UI at /docs, served from the swagger-ui-bundle package: works with no internet.

The page runs no inline script: Swagger UI starts from ui/docs/swagger-init.js, so the
page's Content-Security-Policy allows scripts from this origin only, and an injected
`<script>` (say, through a description in the OpenAPI document) does not run. The key
given to "Authorize" is kept in the page's memory only, never in localStorage.
"""

from __future__ import annotations

import html
from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, HTMLResponse
from swagger_ui_bundle import swagger_ui_path

from tower import resources
from tower.errors import NotFound
from tower.web.headers import PAGE_CONTENT_SECURITY_POLICY

router = APIRouter(include_in_schema=False)

ASSETS_PATH = "/docs/assets"
INIT_SCRIPT = "swagger-init.js"
# Only what the page loads; nothing else in the package directory is reachable.
ASSETS = {
    "swagger-ui-bundle.js": "text/javascript",
    "swagger-ui.css": "text/css",
    "favicon-32x32.png": "image/png",
    INIT_SCRIPT: "text/javascript",
}

# Swagger UI draws its icons from data: URLs and sets element styles from script (not
# inline style attributes or <style> elements, which 'self' alone refuses).
CONTENT_SECURITY_POLICY = PAGE_CONTENT_SECURITY_POLICY

PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>Parpaing API</title>
  <link rel="stylesheet" href="{assets}/swagger-ui.css">
  <link rel="icon" type="image/png" href="{assets}/favicon-32x32.png">
</head>
<body>
  <div id="swagger-ui" data-openapi-url="{openapi}"></div>
  <script src="{assets}/swagger-ui-bundle.js"></script>
  <script src="{assets}/{init}"></script>
</body>
</html>
"""


@router.get("/docs")
async def docs_page(request: Request) -> HTMLResponse:
    prefix = html.escape(request.scope.get("root_path", ""))
    openapi_url = html.escape(request.app.openapi_url or "/openapi.json")
    page = PAGE.format(assets=prefix + ASSETS_PATH, openapi=prefix + openapi_url, init=INIT_SCRIPT)
    return HTMLResponse(page, headers={"Content-Security-Policy": CONTENT_SECURITY_POLICY})


@router.get(ASSETS_PATH + "/{name}")
async def docs_asset(name: str) -> FileResponse:
    media_type = ASSETS.get(name)
    if media_type is None:
        raise NotFound(f"No documentation asset named {name}")
    return FileResponse(_asset_directory(name) / name, media_type=media_type)


def _asset_directory(name: str) -> Path:
    if name == INIT_SCRIPT:
        return resources.shipped("ui") / "docs"
    return Path(str(swagger_ui_path))
