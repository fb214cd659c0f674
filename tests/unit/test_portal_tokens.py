"""Portal tokens: what a minted token holds, and every way a token is refused (another tenant, expired, revoked,
altered, signed with another key or algorithm, too long-lived, missing a claim), with rotation between two
secrets. Tokens a SaaS mints itself with PyJWT and the secret (README "Portal tokens") are accepted."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta

import jwt
import pytest

from metering.portal.tokens import AUDIENCE, MAX_TTL, PortalTokens, TokenRefused
from tests.support import FixedClock

NOW = datetime(2026, 11, 24, 12, 0, 0, 250000, tzinfo=UTC)
SECRET = "current-portal-secret-" + "0123456789abcdef" * 3
PREVIOUS = "previous-portal-secret-0123456789abcdef"


def claims(**overrides: object) -> dict[str, object]:
    issued = int(NOW.timestamp())
    return {"sub": "acme", "aud": AUDIENCE, "iat": issued, "exp": issued + 3600, "jti": "j-1", **overrides}


def tokens(clock: FixedClock, revoked: dict[str, datetime] | None = None, *keys: str) -> PortalTokens:
    return PortalTokens(keys or (SECRET,), clock=clock, not_before=(revoked or {}).get)


def test_a_minted_token_holds_the_documented_claims_and_opens_its_tenant_only():
    clock = FixedClock(NOW)
    minted = tokens(clock).mint("acme", timedelta(hours=2))
    header = json.loads(base64.urlsafe_b64decode(minted.token.split(".")[0] + "=="))
    assert header == {"alg": "HS256", "typ": "JWT"}
    body = jwt.decode(minted.token, SECRET, algorithms=["HS256"], audience=AUDIENCE, options={"verify_exp": False})
    assert set(body) == {"sub", "aud", "iat", "exp", "jti"}
    assert (body["sub"], body["exp"] - body["iat"]) == ("acme", 7200)
    assert minted.claims.expires_at == NOW.replace(microsecond=0) + timedelta(hours=2)
    assert tokens(clock).verify(minted.token, "acme").token_id == body["jti"]
    with pytest.raises(TokenRefused, match="another tenant"):
        tokens(clock).verify(minted.token, "globex")
    assert tokens(clock).mint("acme", timedelta(hours=2)).claims.token_id != minted.claims.token_id


def test_ttl_is_one_second_to_a_day():
    for ttl in (timedelta(0), MAX_TTL + timedelta(seconds=1)):
        with pytest.raises(ValueError, match="1 s to 86400 s"):
            tokens(FixedClock(NOW)).mint("acme", ttl)


def test_an_expired_token_is_refused_after_the_leeway():
    clock = FixedClock(NOW)
    minted = tokens(clock).mint("acme", timedelta(minutes=5))
    clock.now = NOW + timedelta(minutes=5, seconds=30)  # within a minute of its expiry: a clock may lag
    tokens(clock).verify(minted.token, "acme")
    clock.now = NOW + timedelta(minutes=6, seconds=1)
    with pytest.raises(TokenRefused, match="expired"):
        tokens(clock).verify(minted.token, "acme")


def test_revocation_refuses_earlier_tokens_and_not_those_minted_after_it():
    clock = FixedClock(NOW)
    before = tokens(clock).mint("acme", timedelta(hours=1)).token
    # Revoked in the same second, a quarter of a second after that token was issued.
    revoked = {"acme": NOW + timedelta(milliseconds=250)}
    with pytest.raises(TokenRefused, match="revoked"):
        tokens(clock, revoked).verify(before, "acme")
    clock.now = NOW + timedelta(milliseconds=600)
    after = tokens(clock, revoked).mint("acme", timedelta(hours=1)).token
    assert tokens(clock, revoked).verify(after, "acme").tenant_id == "acme"
    # Another tenant's revocation changes nothing for this one.
    assert tokens(clock, {"globex": NOW + timedelta(hours=1)}).verify(before, "acme")


def test_rotation_accepts_both_secrets_and_signs_with_the_new_one():
    clock = FixedClock(NOW)
    old = tokens(clock, None, PREVIOUS).mint("acme", timedelta(hours=1)).token
    rotating = tokens(clock, None, SECRET, PREVIOUS)
    assert rotating.verify(old, "acme")
    new = rotating.mint("acme", timedelta(hours=1)).token
    assert tokens(clock).verify(new, "acme")
    with pytest.raises(TokenRefused, match="signature"):
        tokens(clock).verify(old, "acme")  # the rotation is over: the previous secret is gone


@pytest.mark.parametrize(
    ("token", "reason"),
    [
        (jwt.encode(claims(), "another-secret-of-the-right-length-000", algorithm="HS256"), "signature"),
        (jwt.encode(claims(aud="somewhere-else"), SECRET, algorithm="HS256"), "not a portal token"),
        (jwt.encode(claims(exp=int(NOW.timestamp()) + 86401), SECRET, algorithm="HS256"), "longer than 24 hours"),
        (jwt.encode(claims(iat=int(NOW.timestamp()) + 600), SECRET, algorithm="HS256"), "in the future"),
        (jwt.encode({k: v for k, v in claims().items() if k != "jti"}, SECRET, algorithm="HS256"), "jti"),
        (jwt.encode({k: v for k, v in claims().items() if k != "exp"}, SECRET, algorithm="HS256"), "exp"),
        (jwt.encode(claims(iat="yesterday"), SECRET, algorithm="HS256"), "iat"),
        (jwt.encode(claims(), SECRET, algorithm="HS512"), "malformed"),
        (jwt.encode(claims(), None, algorithm="none"), "malformed"),
        ("not-a-token", "malformed"),
        ("", "malformed"),
    ],
)
def test_tokens_that_do_not_verify_are_refused_with_the_reason(token, reason):
    with pytest.raises(TokenRefused, match=reason):
        tokens(FixedClock(NOW)).verify(token, "acme")


def test_an_altered_token_is_refused():
    good = tokens(FixedClock(NOW)).mint("acme", timedelta(hours=1)).token
    header, payload, signature = good.split(".")
    body = json.loads(base64.urlsafe_b64decode(payload + "=="))
    forged = base64.urlsafe_b64encode(json.dumps({**body, "sub": "globex"}).encode()).rstrip(b"=").decode()
    with pytest.raises(TokenRefused, match="signature"):
        tokens(FixedClock(NOW)).verify(f"{header}.{forged}.{signature}", "globex")


def test_a_token_minted_by_a_saas_backend_with_pyjwt_is_accepted():
    # What README "Portal tokens" tells a SaaS to do in its own backend.
    issued = datetime.now(UTC)
    token = jwt.encode(
        {"sub": "acme", "aud": "metering-portal", "iat": issued, "exp": issued + timedelta(hours=1), "jti": "x-1"},
        SECRET,
        algorithm="HS256",
    )
    assert tokens(FixedClock(issued)).verify(token, "acme").token_id == "x-1"
