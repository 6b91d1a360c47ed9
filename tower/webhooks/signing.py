"""Standard Webhooks signatures: `v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">`.

The signing key is bytes. Standard Webhooks writes it `whsec_<base64>`; any other
secret string is used as its UTF-8 bytes (its standard form is then
`whsec_` + base64 of those bytes, which `standard_form` prints). Reading the secret
into a key is the setting's own parsing (tower/settings.py), so a bad one stops the
start naming WEBHOOK_SECRET.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

from tower.settings import WEBHOOK_SECRET_PREFIX as PREFIX
from tower.settings import signing_key as signing_key  # the secret's format: a setting's

GENERATED_KEY_BYTES = 32


def standard_form(secret: str) -> str:
    """The secret as Standard Webhooks libraries take it (whsec_<base64>)."""
    return PREFIX + base64.b64encode(signing_key(secret)).decode()


def new_secret() -> str:
    return PREFIX + base64.b64encode(secrets.token_bytes(GENERATED_KEY_BYTES)).decode()


def signature(key: bytes, message_id: str, timestamp: int, body: bytes) -> str:
    signed = f"{message_id}.{timestamp}.".encode() + body
    digest = hmac.new(key, signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def headers(key: bytes, message_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    return {
        "webhook-id": message_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signature(key, message_id, timestamp, body),
    }
