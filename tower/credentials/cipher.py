"""AES-GCM encryption of credential secrets with the operator's SECRETS_KEY.

The database alone never reveals a secret: the key lives in the environment (or, for
the all-in-one tower, in a file only tower's user reads). Each secret is bound to its
credential's name (associated data), so a ciphertext copied onto another row does not
decrypt there.
"""

from __future__ import annotations

import hashlib
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from tower.errors import Conflict
from tower.settings import SECRETS_KEY_HINT, secrets_key_bytes

NONCE_BYTES = 12


class SecretsKeyMissing(Conflict):
    """Credentials cannot be stored or read without a key: an operator's setting."""


class Cipher:
    def __init__(self, key: bytes) -> None:
        self._aead = AESGCM(key)
        # Names the key without revealing it: a row says which key sealed it, so a
        # changed SECRETS_KEY is reported as such rather than as a corrupt secret.
        self.key_id = hashlib.sha256(b"parpaing-credentials" + key).hexdigest()[:16]

    def seal(self, name: str, secret: str) -> bytes:
        nonce = os.urandom(NONCE_BYTES)
        return nonce + self._aead.encrypt(nonce, secret.encode(), name.encode())

    def open(self, name: str, sealed: bytes, key_id: str) -> str:
        if key_id != self.key_id:
            raise Conflict(
                f"credential {name!r} was stored under another SECRETS_KEY; "
                "restore that key or store the credential again"
            )
        try:
            plain = self._aead.decrypt(sealed[:NONCE_BYTES], sealed[NONCE_BYTES:], name.encode())
        except InvalidTag:
            raise Conflict(f"credential {name!r} does not decrypt; store it again") from None
        return plain.decode()


def cipher_for(secrets_key: str) -> Cipher:
    if not secrets_key:
        raise SecretsKeyMissing(
            "credentials need SECRETS_KEY, which is not set: " + SECRETS_KEY_HINT + ", then restart"
        )
    return Cipher(secrets_key_bytes(secrets_key))
