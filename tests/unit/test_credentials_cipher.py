"""The credentials cipher and its key: AES-GCM bound to the credential's name."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from tower.credentials.cipher import Cipher, cipher_for
from tower.errors import Conflict
from tower.settings import Settings, new_secrets_key, secrets_key_bytes


def test_a_sealed_secret_opens_under_its_key_and_name_only() -> None:
    cipher = cipher_for(new_secrets_key())
    sealed = cipher.seal("deploy", "s3cret-token")
    assert b"s3cret-token" not in sealed
    assert cipher.open("deploy", sealed, cipher.key_id) == "s3cret-token"
    with pytest.raises(Conflict, match="does not decrypt"):
        cipher.open("other", sealed, cipher.key_id)


def test_each_seal_is_fresh() -> None:
    cipher = cipher_for(new_secrets_key())
    assert cipher.seal("a", "same") != cipher.seal("a", "same")


def test_a_changed_key_is_named_as_such() -> None:
    first, second = cipher_for(new_secrets_key()), cipher_for(new_secrets_key())
    sealed = first.seal("deploy", "token")
    with pytest.raises(Conflict, match="another SECRETS_KEY"):
        second.open("deploy", sealed, first.key_id)


def test_the_key_id_does_not_reveal_the_key() -> None:
    key = new_secrets_key()
    assert cipher_for(key).key_id not in key
    assert isinstance(cipher_for(key), Cipher)


@pytest.mark.parametrize("bad", ["short", "!!!!", "a" * 44])
def test_a_malformed_secrets_key_stops_the_start_naming_it(bad: str) -> None:
    with pytest.raises(ValidationError, match="SECRETS_KEY must be 32 random bytes"):
        Settings(secrets_key=bad)
    with pytest.raises(ValueError):
        secrets_key_bytes(bad)


def test_a_missing_key_is_a_conflict_naming_the_setting() -> None:
    with pytest.raises(Conflict, match="SECRETS_KEY"):
        cipher_for("")
