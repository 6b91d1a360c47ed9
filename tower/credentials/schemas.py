"""What the credentials API accepts and returns. A secret goes in and never comes out:
no response model has a field for it."""

from __future__ import annotations

import re
import urllib.parse
from datetime import datetime
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, SecretStr

from tower.db.ids import SAFE_ID

CredentialKind = Literal["git", "github", "gitlab"]

SECRET_MAX_BYTES = 16 * 1024
URL_MAX = 2048
# Where a forge's API is when the credential does not say.
DEFAULT_API_URLS: dict[str, str] = {
    "github": "https://api.github.com",
    "gitlab": "https://gitlab.com/api/v4",
}

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _printable_secret(secret: SecretStr) -> SecretStr:
    value = secret.get_secret_value()
    if not value:
        raise ValueError("must not be empty")
    if len(value.encode("utf-8", "surrogatepass")) > SECRET_MAX_BYTES:
        raise ValueError(f"must be at most {SECRET_MAX_BYTES} bytes")
    if _CONTROL.search(value) or re.search("[\ud800-\udfff]", value):
        # A newline in a token would split the HTTP header it travels in.
        raise ValueError("must not contain control characters")
    return secret


def _printable(text: str) -> str:
    if _CONTROL.search(text):
        raise ValueError("must not contain control characters")
    return text


def _http_url(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("must be an http(s) URL with a host")
    if parts.username or parts.password:
        raise ValueError("must not carry credentials; the secret goes in `secret`")
    return url.rstrip("/")


class CredentialIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Annotated[str, Field(pattern=SAFE_ID)]
    kind: CredentialKind
    username: (
        Annotated[str, Field(min_length=1, max_length=256), AfterValidator(_printable)] | None
    ) = None
    secret: Annotated[SecretStr, AfterValidator(_printable_secret)]
    api_url: Annotated[str, Field(max_length=URL_MAX), AfterValidator(_http_url)] | None = None


class CredentialOut(BaseModel):
    tenant: str
    name: str
    kind: CredentialKind
    username: str | None
    api_url: str | None
    created_at: datetime
    updated_at: datetime


class CredentialList(BaseModel):
    credentials: list[CredentialOut]
