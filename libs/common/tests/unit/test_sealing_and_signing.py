"""Secrets sealed at rest (AES-GCM, key id beside the ciphertext, rotation) and Standard Webhooks signatures."""

from __future__ import annotations

import base64

import pytest

from leaky_common.sealing import SealError, SecretBox, is_sealed, new_key
from leaky_common.webhook_signing import (
    InvalidSignature,
    check_secret,
    new_secret,
    sign,
    signed_headers,
    verify,
)

K1, K2 = new_key(), new_key()


def test_seal_round_trip_hides_the_plaintext_and_names_the_key() -> None:
    box = SecretBox(f"k1:{K1}")
    sealed = box.seal("xoxb-slack-token", "row-1:url")
    assert is_sealed(sealed) and sealed.startswith("enc:v1:k1:")
    assert "xoxb" not in sealed
    assert box.open(sealed, "row-1:url") == "xoxb-slack-token"
    assert box.seal("same", "c") != box.seal("same", "c")  # fresh nonce each time


def test_a_sealed_value_opens_only_in_its_place_and_untampered() -> None:
    box = SecretBox(f"k1:{K1}")
    sealed = box.seal("token", "row-1:secrets:bot_token")
    with pytest.raises(SealError):
        box.open(sealed, "row-2:secrets:bot_token")  # copied into another row
    raw = bytearray(base64.urlsafe_b64decode(sealed.rsplit(":", 1)[1]))
    raw[-1] ^= 1
    with pytest.raises(SealError):
        box.open(
            sealed.rsplit(":", 1)[0] + ":" + base64.urlsafe_b64encode(bytes(raw)).decode(),
            "row-1:secrets:bot_token",
        )
    with pytest.raises(SealError):
        SecretBox(f"k1:{K2}").open(sealed, "row-1:secrets:bot_token")  # same id, other key


def test_rotation_new_key_first_old_values_still_open_and_need_resealing() -> None:
    old = SecretBox(f"k1:{K1}").seal("s", "c")
    rotated = SecretBox(f"k2:{K2},k1:{K1}")
    assert rotated.current_key_id == "k2"
    assert rotated.open(old, "c") == "s"
    assert rotated.needs_reseal(old) and rotated.needs_reseal("plaintext")
    assert not rotated.needs_reseal(rotated.seal("s", "c"))
    with pytest.raises(SealError, match="no key 'k1'"):
        SecretBox(f"k2:{K2}").open(old, "c")  # old key retired before re-sealing


@pytest.mark.parametrize(
    "keys",
    ["k1", "k1:notbase64!", "k1:" + base64.b64encode(b"short").decode(), f"k1:{K1},k1:{K2}", f"bad id:{K1}"],
    ids=["no-key", "not-base64", "short-key", "duplicate-id", "bad-id"],  # the keys are random: stable ids
)
def test_bad_key_settings_are_refused(keys: str) -> None:
    with pytest.raises(SealError):
        SecretBox(keys)


def test_no_key_seals_nothing() -> None:
    box = SecretBox("")
    assert not box.configured
    with pytest.raises(SealError):
        box.seal("x", "c")


def test_signature_matches_the_standard_webhooks_test_vector() -> None:
    # From the Standard Webhooks reference libraries' tests.
    secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    body = b'{"test": 2432232314}'
    expected = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
    assert sign(secret, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body) == expected
    headers = {
        "Webhook-Id": "msg_p5jXN8AQM9LWM0D4loKWxJek",
        "Webhook-Timestamp": "1614265330",
        "Webhook-Signature": f"v1,bm90LXRoaXMtb25l {expected}",  # several signatures: any may match
    }
    assert verify(secret, headers, body, now=1614265330 + 10) == "msg_p5jXN8AQM9LWM0D4loKWxJek"


def test_verify_refuses_tampering_other_secrets_and_replays_outside_the_window() -> None:
    secret = new_secret()
    body = b'{"id":"e1"}'
    headers = signed_headers(secret, "dlv_1", body, now=1_000_000)
    assert verify(secret, headers, body, now=1_000_000 + 299) == "dlv_1"
    for bad_secret, bad_body, bad_headers, now in (
        (secret, b'{"id":"e2"}', headers, 1_000_000),  # body changed
        (new_secret(), body, headers, 1_000_000),  # other secret
        (secret, body, {**headers, "webhook-id": "dlv_2"}, 1_000_000),  # id changed
        (secret, body, {**headers, "webhook-timestamp": "1000001"}, 1_000_000),  # timestamp changed
        (secret, body, headers, 1_000_000 + 301),  # replayed after the window
        (secret, body, headers, 1_000_000 - 301),  # from the future
        (secret, body, {k: v for k, v in headers.items() if k != "webhook-signature"}, 1_000_000),
    ):
        with pytest.raises(InvalidSignature):
            verify(bad_secret, bad_headers, bad_body, now=now)


def test_secrets_are_whsec_with_enough_key() -> None:
    assert check_secret(new_secret()).startswith("whsec_")
    for bad in ("s3cret", "whsec_", "whsec_c2hvcnQ=", "whsec_!!!!"):
        with pytest.raises(ValueError):
            check_secret(bad)
