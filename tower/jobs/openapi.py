"""The OpenAPI document, patched per request with what only the running replica knows.

Engine and profile names are configs that change at runtime, so they become enums
from the ConfigStore each time the document is served. Routes that depend on the
API key are marked with the bearer security scheme.
"""

from __future__ import annotations

import copy
from typing import Any

from fastapi import FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.openapi.utils import get_openapi
from fastapi.routing import APIRoute

from tower.deps import require_key

BEARER = "bearerAuth"
REQUEST_SCHEMA = "JobRequest"

Document = dict[str, Any]


def install_openapi(app: FastAPI) -> None:
    base: Document = {}

    def openapi() -> Document:
        if not base:
            base.update(_build(app))
        document = copy.deepcopy(base)
        _enum_config_names(document, app)
        return document

    app.openapi = openapi  # type: ignore[method-assign]


def _build(app: FastAPI) -> Document:
    document = get_openapi(
        title=app.title, version=app.version, description=app.description, routes=app.routes
    )
    components = document.setdefault("components", {})
    components.setdefault("securitySchemes", {})[BEARER] = {"type": "http", "scheme": "bearer"}
    for route in app.routes:
        if isinstance(route, APIRoute) and route.include_in_schema and _needs_key(route.dependant):
            _mark_secured(document, route)
    return document


def _needs_key(dependant: Dependant) -> bool:
    return any(sub.call is require_key or _needs_key(sub) for sub in dependant.dependencies)


def _mark_secured(document: Document, route: APIRoute) -> None:
    operations = document.get("paths", {}).get(route.path_format, {})
    for method in route.methods or ():
        operation = operations.get(method.lower())
        if operation is not None:
            operation["security"] = [{BEARER: []}]


def _enum_config_names(document: Document, app: FastAPI) -> None:
    state = getattr(app.state, "tower", None)
    if state is None:  # not started (no lifespan): nothing known to enumerate
        return
    schemas = document.get("components", {}).get("schemas", {})
    properties = schemas.get(REQUEST_SCHEMA, {}).get("properties", {})
    for field, names in (
        ("engine", state.configs.engine_names()),
        ("profile", state.configs.profile_names()),
    ):
        if field in properties and names:
            properties[field]["enum"] = sorted(names)
