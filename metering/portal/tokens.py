"""Portal tokens: a JWT that lets its bearer read one tenant's usage through the portal's data routes, and nothing
else.

    header   {"alg": "HS256", "typ": "JWT"}
    claims   sub   the tenant id
             aud   "metering-portal"
             iat   when it was issued (NumericDate: seconds since the epoch, UTC)
             exp   when it expires: at most 24 hours after iat
             jti   a random id, unique per token

Signed with HMAC-SHA256 under METERING_PORTAL_SECRET; while a secret is rotated, tokens signed with the previous
one (METERING_PORTAL_SECRET_PREVIOUS) are still accepted until they expire. A tenant's `tokens_not_before`
setting revokes every token issued before it. A SaaS can mint the same tokens in its own backend with any JWT
library and the secret (README "Portal tokens").

Times are checked here against the injected clock, not by PyJWT (which reads the system clock), with a leeway
for the clocks of backends that mint their own tokens.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt

from metering.core.clock import Clock, utc_now

ALGORITHM = "HS256"
AUDIENCE = "metering-portal"
MAX_TTL = timedelta(hours=24)
# Tolerated difference between our clock and that of a backend minting its own tokens.
LEEWAY = timedelta(seconds=60)
REQUIRED_CLAIMS = ("sub", "aud", "iat", "exp", "jti")
_JTI_BYTES = 16

NotBefore = Callable[[str], datetime | None]


class TokenRefused(Exception):
    """The token does not open this tenant's portal; the message says why in words safe to show its bearer."""


@dataclass(frozen=True, slots=True)
class PortalToken:
    tenant_id: str
    token_id: str
    issued_at: datetime
    expires_at: datetime


@dataclass(frozen=True, slots=True)
class MintedToken:
    token: str
    claims: PortalToken


def _no_revocation(_tenant_id: str) -> datetime | None:
    return None


class PortalTokens:
    """Mints and verifies portal tokens. `secrets_in_use` is the current secret, then the previous one during a
    rotation; `not_before` gives a tenant's revocation instant (None: none)."""

    def __init__(
        self,
        secrets_in_use: Sequence[str],
        *,
        clock: Clock = utc_now,
        not_before: NotBefore = _no_revocation,
    ) -> None:
        if not secrets_in_use:
            raise ValueError("portal tokens need a secret")
        self.secrets = tuple(secrets_in_use)
        self.clock = clock
        self.not_before = not_before

    def mint(self, tenant_id: str, ttl: timedelta) -> MintedToken:
        if not timedelta(seconds=1) <= ttl <= MAX_TTL:
            raise ValueError(f"a portal token lives 1 s to {int(MAX_TTL.total_seconds())} s")
        issued = self.clock().astimezone(UTC).replace(microsecond=0)
        revoked = self.not_before(tenant_id)
        if revoked is not None and issued < revoked:
            # Minted in the second of a revocation: issued at the next whole second (within the leeway), so the
            # revocation refuses every earlier token and none of the new ones.
            issued = revoked.astimezone(UTC).replace(microsecond=0) + timedelta(seconds=1)
        expires = issued + ttl
        token_id = secrets.token_urlsafe(_JTI_BYTES)
        claims = {
            "sub": tenant_id,
            "aud": AUDIENCE,
            "iat": int(issued.timestamp()),
            "exp": int(expires.timestamp()),
            "jti": token_id,
        }
        token = jwt.encode(claims, self.secrets[0], algorithm=ALGORITHM)
        return MintedToken(token, PortalToken(tenant_id, token_id, issued, expires))

    def verify(self, token: str, tenant_id: str) -> PortalToken:
        """The token's claims when it opens `tenant_id`'s portal now; TokenRefused otherwise."""
        claims = self._decode(token)
        if claims["sub"] != tenant_id:
            raise TokenRefused("the token is for another tenant")
        issued, expires = _instant(claims, "iat"), _instant(claims, "exp")
        now = self.clock()
        if expires - issued > MAX_TTL:
            raise TokenRefused("the token lives longer than 24 hours")
        if issued > now + LEEWAY:
            raise TokenRefused("the token is issued in the future")
        if expires <= now - LEEWAY:
            raise TokenRefused("the token has expired")
        revoked = self.not_before(tenant_id)
        if revoked is not None and issued < revoked:
            raise TokenRefused("the token was revoked")
        return PortalToken(tenant_id, str(claims["jti"]), issued, expires)

    def _decode(self, token: str) -> dict[str, Any]:
        for secret in self.secrets:
            try:
                return jwt.decode(
                    token,
                    secret,
                    algorithms=[ALGORITHM],
                    audience=AUDIENCE,
                    # Times against our clock, below; presence and the other claims' types here.
                    options={"require": list(REQUIRED_CLAIMS), "verify_exp": False, "verify_iat": False},
                )
            except jwt.InvalidSignatureError:
                continue  # perhaps signed with the other secret of a rotation
            except jwt.InvalidAudienceError:
                raise TokenRefused("the token is not a portal token") from None
            except jwt.MissingRequiredClaimError as error:
                raise TokenRefused(f"the token lacks its {error.claim} claim") from None
            except jwt.PyJWTError:
                raise TokenRefused("the token is malformed") from None
        raise TokenRefused("the token's signature does not verify")


def _instant(claims: dict[str, Any], name: str) -> datetime:
    value = claims[name]
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TokenRefused(f"the token's {name} claim is not a NumericDate")
    try:
        return datetime.fromtimestamp(value, UTC)
    except (OverflowError, OSError, ValueError):
        raise TokenRefused(f"the token's {name} claim is out of range") from None
