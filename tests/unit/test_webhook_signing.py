"""Standard Webhooks signing, checked against the reference library's own signer."""

from __future__ import annotations

import base64
from datetime import UTC, datetime

import pytest
from standardwebhooks import Webhook

from tower.webhooks import signing
from tower.webhooks.sender import backoff

BODY = '{"type":"job.completed","data":{"job_id":"a-0123456789ab","result":"héllo"}}'


def test_signature_matches_the_reference_signer() -> None:
    secret = signing.new_secret()
    key = signing.signing_key(secret)
    ours = signing.signature(key, "msg_1", 1_700_000_000, BODY.encode())
    theirs = Webhook(secret).sign("msg_1", datetime.fromtimestamp(1_700_000_000, UTC), BODY)
    assert ours == theirs
    assert ours.startswith("v1,")


def test_a_known_vector() -> None:
    # The example of the Standard Webhooks specification's reference implementations.
    key = signing.signing_key("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
    body = b'{"test": 2432232314}'
    expected = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
    assert signing.signature(key, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body) == expected


def test_secret_forms() -> None:
    raw = b"\x00\x01binary key\xff"
    whsec = "whsec_" + base64.b64encode(raw).decode()
    assert signing.signing_key(whsec) == raw
    assert signing.signing_key("plain passphrase") == b"plain passphrase"
    assert (
        signing.standard_form("plain passphrase")
        == "whsec_" + base64.b64encode(b"plain passphrase").decode()
    )
    assert signing.standard_form(whsec) == whsec
    # A plain secret, given to a verifier in its standard form, verifies our signatures.
    headers = signing.headers(
        signing.signing_key("pw"), "msg_x", int(datetime.now(UTC).timestamp()), BODY.encode()
    )
    assert Webhook(signing.standard_form("pw")).verify(BODY, headers)["data"]["result"] == "héllo"


@pytest.mark.parametrize("secret", ["", "whsec_", "whsec_not*base64!"])
def test_malformed_secrets_say_why(secret: str) -> None:
    with pytest.raises(ValueError, match="WEBHOOK_SECRET"):
        signing.signing_key(secret)


def test_generated_secrets_are_fresh_and_long() -> None:
    first, second = signing.new_secret(), signing.new_secret()
    assert first != second
    assert len(signing.signing_key(first)) == signing.GENERATED_KEY_BYTES


def test_backoff_grows_exponentially_within_jitter_and_cap() -> None:
    for attempt in range(1, 12):
        ceiling = min(100.0, 1.0 * 2 ** (attempt - 1))
        for _ in range(50):
            delay = backoff(attempt, base=1.0, cap=100.0)
            assert ceiling / 2 <= delay <= ceiling
    assert backoff(1000, base=1.0, cap=100.0) <= 100.0
    assert len({backoff(5, base=1.0, cap=100.0) for _ in range(20)}) > 1  # jittered
