"""API key material: a key is `ppk_` and 256 random bits (URL-safe base64); tower keeps
only its SHA-256. A key that random needs neither salt nor a slow hash: nobody guesses it,
and nobody inverts the digest."""

from __future__ import annotations

import hashlib
import re
import secrets

KEY_PREFIX = "ppk_"
KEY_BYTES = 32
# What a key looks like: anything else is refused without asking the database.
KEY_PATTERN = re.compile(r"^ppk_[A-Za-z0-9_-]{43}$")
KEY_ID = re.compile(r"^key_[0-9a-f]{16}$")
# The characters of a key kept to tell keys apart in a list: the prefix and 4 more (24 bits).
HINT_CHARS = 8


def new_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(KEY_BYTES)


def new_key_id() -> str:
    return f"key_{secrets.token_hex(8)}"


def digest(key: str) -> str:
    """What is stored and looked up: the key's SHA-256, in hex."""
    return hashlib.sha256(key.encode()).hexdigest()


def looks_like_key(text: str) -> bool:
    return KEY_PATTERN.match(text) is not None


def hint(key: str) -> str:
    return key[:HINT_CHARS] + "…"
