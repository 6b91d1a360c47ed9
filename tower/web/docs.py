"""Swagger UI at /docs, served from the swagger-ui-bundle package: works with no internet."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, HTMLResponse
from swagger_ui_bundle import swagger_ui_path

from tower.errors import NotFound

router = APIRouter(include_in_schema=False)

ASSETS_PATH = "/docs/assets"
# Only what the page loads; nothing else in the package directory is reachable.
ASSETS = {
    "swagger-ui-bundle.js": "text/javascript",
    "swagger-ui.css": "text/css",
    "favicon-32x32.png": "image/png",
}

# validatorUrl: null stops the UI from fetching a badge from validator.swagger.io.
PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>Parpaing API</title>
  <link rel="stylesheet" href="{assets}/swagger-ui.css">
  <link rel="icon" type="image/png" href="{assets}/favicon-32x32.png">
</head>
<body>
  <div id="swagger-ui"></div>
  <script src="{assets}/swagger-ui-bundle.js"></script>
  <script>
    window.ui = SwaggerUIBundle({{
      url: "{openapi}",
      dom_id: "#swagger-ui",
      deepLinking: true,
      persistAuthorization: true,
      validatorUrl: null,
      presets: [SwaggerUIBundle.presets.apis],
      layout: "BaseLayout"
    }});
  </script>
</body>
</html>
"""


@router.get("/docs")
async def docs_page(request: Request) -> HTMLResponse:
    prefix = request.scope.get("root_path", "")
    openapi_url = request.app.openapi_url or "/openapi.json"
    return HTMLResponse(PAGE.format(assets=prefix + ASSETS_PATH, openapi=prefix + openapi_url))


@router.get(ASSETS_PATH + "/{name}")
async def docs_asset(name: str) -> FileResponse:
    media_type = ASSETS.get(name)
    if media_type is None:
        raise NotFound(f"No documentation asset named {name}")
    return FileResponse(Path(str(swagger_ui_path)) / name, media_type=media_type)
