"""Loop fingerprints are keyed per org: stable within an org, unlinkable across orgs and secrets, and never
a plain hash of the prompt."""

import hashlib

import orjson
import pytest

from lt_gateway.domain.fingerprint import Fingerprinter, prompt_digest

SECRET = b"s" * 32
MESSAGES = [{"role": "user", "content": "hello"}]


def test_same_prompt_same_org_same_fingerprint() -> None:
    fp = Fingerprinter(SECRET)
    a = fp.fingerprint("org-a", prompt_digest("m", MESSAGES))
    assert a is not None and len(a) == 32
    assert a == Fingerprinter(SECRET).fingerprint("org-a", prompt_digest("m", [dict(MESSAGES[0])]))
    assert a != fp.fingerprint("org-a", prompt_digest("m", [{"role": "user", "content": "hellO"}]))


def test_fingerprints_differ_across_orgs_and_secrets() -> None:
    digest = prompt_digest("m", MESSAGES)
    a = Fingerprinter(SECRET).fingerprint("org-a", digest)
    assert a != Fingerprinter(SECRET).fingerprint("org-b", digest)
    assert a != Fingerprinter(b"t" * 32).fingerprint("org-a", digest)


def test_no_plain_hash_of_the_prompt_and_no_fingerprint_without_an_org() -> None:
    material = orjson.dumps(["m", MESSAGES])
    a = Fingerprinter(SECRET).fingerprint("org-a", prompt_digest("m", MESSAGES))
    assert a is not None
    for algo in ("sha256", "sha1", "md5", "blake2b", "sha512"):
        assert a[:16] not in hashlib.new(algo, material).hexdigest()
    assert a[:16] not in hashlib.blake2b(material, digest_size=12).hexdigest()
    assert Fingerprinter(SECRET).fingerprint(None, prompt_digest("m", MESSAGES)) is None


def test_short_secret_is_refused() -> None:
    with pytest.raises(ValueError, match="16 bytes"):
        Fingerprinter(b"short")
