"""The OpenAPI document, patched per request with what only the running replica knows.

Engine and profile names are configs that change at runtime, so they become enums
from the ConfigStore each time the document is served. Routes that need the API key
say so with `openapi_extra=SECURED`; the bearer scheme they name is declared here.
"""

from __future__ import annotations

import copy
from typing import Any

from fastapi import FastAPI

BEARER = "bearerAuth"
SECURED: dict[str, Any] = {"security": [{BEARER: []}]}
REQUEST_SCHEMA = "JobRequest"

Document = dict[str, Any]


def install_openapi(app: FastAPI) -> None:
    generate = app.openapi  # FastAPI's own: cached until the routes change

    def openapi() -> Document:
        document = copy.deepcopy(generate())
        components = document.setdefault("components", {})
        components.setdefault("securitySchemes", {})[BEARER] = {"type": "http", "scheme": "bearer"}
        _enum_config_names(components, app)
        return document

    app.openapi = openapi  # type: ignore[method-assign]


def _enum_config_names(components: Document, app: FastAPI) -> None:
    state = getattr(app.state, "tower", None)
    if state is None:  # not started (no lifespan): nothing known to enumerate
        return
    properties = components.get("schemas", {}).get(REQUEST_SCHEMA, {}).get("properties", {})
    for field, names in (
        ("engine", state.configs.engine_names()),
        ("profile", state.configs.profile_names()),
    ):
        if field in properties and names:
            properties[field]["enum"] = sorted(names)
