"""Signed tokens of public links: purpose-bound, expiring, versioned; a forged, altered,
expired or misused token is refused with its own reason."""

from __future__ import annotations

import base64
import json

import pytest
from tribune_shared.tokens import (
    ExpiredToken,
    MalformedToken,
    SignedTokens,
    TamperedToken,
    TokenError,
    UnsubscribeTokens,
    UnsupportedVersion,
    WrongPurpose,
)

SECRET = "unit-test-token-secret-0123456789abcdef"
NOW = 1_800_000_000.0


class Clock:
    def __init__(self, now: float = NOW) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def tokens(purpose: str = "consent-confirm", ttl: float | None = 3600, **kw) -> SignedTokens:
    return SignedTokens(SECRET, purpose, ttl_seconds=ttl, clock=kw.pop("clock", Clock()), **kw)


def test_a_genuine_token_gives_back_its_data_and_expiry():
    signer = tokens()
    token = signer.sign({"c": "c42", "p": "news"})
    verified = signer.verify(token)
    assert verified.data == {"c": "c42", "p": "news"}
    assert verified.purpose == "consent-confirm"
    assert verified.expires_at == int(NOW + 3600)
    assert verified.version == 1
    assert token.count(".") == 1 and all(c not in token for c in "+/=?&")  # URL-safe


def test_a_token_expires_after_its_ttl():
    clock = Clock()
    signer = tokens(clock=clock)
    token = signer.sign({"c": "c42"})
    clock.now = NOW + 3600  # the last valid second
    assert signer.verify(token).data == {"c": "c42"}
    clock.now = NOW + 3601
    with pytest.raises(ExpiredToken) as refused:
        signer.verify(token)
    assert refused.value.reason == "expired"
    assert refused.value.expired_at == int(NOW + 3600)


def test_no_ttl_means_the_token_never_expires():
    clock = Clock()
    signer = tokens(ttl=None, clock=clock)
    token = signer.sign({"c": "c42"})
    clock.now = NOW + 10 * 365 * 86400
    assert signer.verify(token).expires_at is None


def test_a_token_signed_with_another_secret_is_refused_as_tampered():
    other = SignedTokens("another-secret-0123456789abcdefgh", "consent-confirm", clock=Clock())
    with pytest.raises(TamperedToken) as refused:
        tokens().verify(other.sign({"c": "c42"}))
    assert refused.value.reason == "bad_signature"


def test_altering_the_data_breaks_the_signature():
    signer = tokens()
    payload, mac = signer.sign({"c": "c42", "p": "news"}).split(".")
    claims = json.loads(unb64(payload))
    claims["d"]["c"] = "someone-else"
    forged = f"{b64(json.dumps(claims).encode())}.{mac}"
    with pytest.raises(TamperedToken):
        signer.verify(forged)


def test_extending_the_expiry_breaks_the_signature():
    clock = Clock()
    signer = tokens(clock=clock)
    payload, mac = signer.sign({"c": "c42"}).split(".")
    claims = json.loads(unb64(payload))
    claims["e"] += 10 * 86400
    clock.now = NOW + 7200  # genuinely expired by now
    with pytest.raises(TamperedToken):  # the forgery is caught before the expiry
        signer.verify(f"{b64(json.dumps(claims).encode())}.{mac}")


def test_a_token_of_another_purpose_is_refused_even_with_the_same_secret():
    unsubscribe = tokens("unsubscribe")
    with pytest.raises(WrongPurpose) as refused:
        tokens("consent-confirm").verify(unsubscribe.sign({"c": "c42"}))
    assert refused.value.reason == "wrong_purpose"


def test_relabelling_the_purpose_breaks_the_signature():
    signer = tokens("unsubscribe")
    payload, mac = signer.sign({"c": "c42"}).split(".")
    claims = json.loads(unb64(payload))
    claims["p"] = "consent-confirm"
    with pytest.raises(TamperedToken):
        tokens("consent-confirm").verify(f"{b64(json.dumps(claims).encode())}.{mac}")


def test_an_unknown_format_version_is_refused():
    signer = tokens()
    payload, mac = signer.sign({"c": "c42"}).split(".")
    claims = json.loads(unb64(payload))
    claims["v"] = 2
    with pytest.raises(UnsupportedVersion) as refused:
        signer.verify(f"{b64(json.dumps(claims).encode())}.{mac}")
    assert refused.value.reason == "unsupported_version"


@pytest.mark.parametrize(
    "token",
    ["", "abc", "a.b.c", "!!!.???", "e30.", ".c2ln", "bm90IGpzb24.c2ln", "W10.c2ln", "x" * 5000],
)
def test_malformed_tokens_are_refused(token):
    with pytest.raises(MalformedToken) as refused:
        tokens().verify(token)
    assert refused.value.reason == "malformed"


def test_every_refusal_has_its_own_reason():
    reasons = {
        cls.reason
        for cls in (MalformedToken, TamperedToken, WrongPurpose, UnsupportedVersion, ExpiredToken)
    }
    assert len(reasons) == 5
    assert all(issubclass(c, TokenError) for c in (MalformedToken, ExpiredToken))


def test_a_rotated_secret_still_verifies_tokens_signed_before_the_rotation():
    old = SignedTokens("the-old-secret-0123456789abcdefghij", "unsubscribe", clock=Clock())
    token = old.sign({"c": "c42"})
    rotated = SignedTokens(
        SECRET, "unsubscribe", previous_secrets=["the-old-secret-0123456789abcdefghij"]
    )
    assert rotated.verify(token).data == {"c": "c42"}
    with pytest.raises(TamperedToken):  # new tokens are signed with the new secret only
        old.verify(rotated.sign({"c": "c1"}))


@pytest.mark.parametrize(
    ("secret", "purpose", "ttl"),
    [("", "p", None), (SECRET, "", None), (SECRET, "a:b", None), (SECRET, "p", 0)],
)
def test_bad_configuration_is_refused(secret, purpose, ttl):
    with pytest.raises(ValueError):
        SignedTokens(secret, purpose, ttl_seconds=ttl)


def test_unsubscribe_tokens_name_contact_and_purpose_and_never_expire():
    links = UnsubscribeTokens(SECRET)
    token = links.sign("c42", "news")
    assert links.verify(token) == ("c42", "news")
    assert SignedTokens(SECRET, "unsubscribe").verify(token).expires_at is None
    with pytest.raises(TamperedToken):
        UnsubscribeTokens("another-secret-0123456789abcdefgh").verify(token)
    with pytest.raises(WrongPurpose):  # a confirmation token is no unsubscribe token
        links.verify(SignedTokens(SECRET, "consent-confirm").sign({"c": "c42", "p": "news"}))
