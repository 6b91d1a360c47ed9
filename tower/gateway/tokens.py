"""Gateway tokens: what a worker holds instead of a provider key.

A token is 256 random bits, minted by tower when an attempt starts. Only its SHA-256
is stored (jobs.gateway_token_sha256): a database reader learns nothing that would let
them call a provider. The plain token lives in the owner's memory and the worker's env.
"""

from __future__ import annotations

import hashlib
import secrets

TOKEN_BYTES = 32
# Never shorter than a minted token's text: a shorter value cannot be one of ours.
MIN_TOKEN_CHARS = 43
MAX_TOKEN_CHARS = 256


def mint() -> str:
    return secrets.token_urlsafe(TOKEN_BYTES)


def digest(token: str) -> str:
    """The stored form of a token: SHA-256, hex."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def plausible(token: str) -> bool:
    """Worth a database look-up: the length of a minted token, URL-safe characters only."""
    return MIN_TOKEN_CHARS <= len(token) <= MAX_TOKEN_CHARS and all(
        char.isascii() and (char.isalnum() or char in "-_") for char in token
    )
