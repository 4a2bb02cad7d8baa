"""Bearer-token verification with PyJWT.

The token only proves who the caller is (`sub`); what they may do comes from
workspace membership. Algorithms are fixed by configuration, never taken from
the token header, so `alg: none` and HS/RS confusion are refused.
"""

from __future__ import annotations

import time
from typing import Any

import jwt
from flask import g, request

from billing.config import Config
from billing.errors import ApiError
from billing.input_guard import is_clean_identifier
from billing.memo import Memo

# A token's `exp` may be at most this far ahead (API.md: tokens).
MAX_TOKEN_LIFETIME_SECONDS = 365 * 86400
# PyJWT accepts a token this long past its `exp` (clocks differ).
EXP_LEEWAY_SECONDS = 30
# A front end sends one token with each request until it expires, and checking its signature and
# claims cost more than the rest of a cached read. Each process keeps the claims of the tokens it
# verified (by the token's exact text) until the token expires, and at most this long: a JWKS key
# withdrawn by its issuer stops being accepted within it.
VERIFIED_FOR_SECONDS = 60
VERIFIED_TOKENS = 4096


def authentication_error(message: str = "A valid bearer token is required.") -> ApiError:
    return ApiError(401, "authentication_required", message, headers={"WWW-Authenticate": "Bearer"})


class TokenVerifier:
    def __init__(self, config: Config) -> None:
        self.algorithms = list(config.jwt_algorithms)
        self.issuer = config.jwt_issuer
        self.audience = config.jwt_audience
        self.secret = config.jwt_secret
        self.jwks = (
            jwt.PyJWKClient(config.jwt_jwks_url, cache_keys=True, lifespan=600, timeout=10)
            if config.jwt_jwks_url
            else None
        )
        self._verified: Memo[str, tuple[float, dict[str, Any]]] = Memo(
            VERIFIED_TOKENS
        )  # token -> (valid until, claims)

    def verify(self, token: str) -> dict[str, Any]:
        """Return the claims of a valid token; raise a 401 ApiError otherwise."""
        now = time.time()
        known = self._verified.get(token)
        if known is not None and now < known[0]:
            return known[1]
        claims = self._verify(token)
        until = min(now + VERIFIED_FOR_SECONDS, float(claims["exp"]) + EXP_LEEWAY_SECONDS)
        self._verified.keep(token, (until, claims))
        return claims

    def _verify(self, token: str) -> dict[str, Any]:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise authentication_error("The bearer token is malformed.") from None
        if header.get("alg") not in self.algorithms:
            raise authentication_error("The token's signing algorithm is not accepted.")
        key: Any
        if self.jwks is not None:
            try:
                key = self.jwks.get_signing_key_from_jwt(token).key
            except jwt.PyJWKClientConnectionError:
                raise ApiError(503, "auth_unavailable", "The token keys could not be fetched.") from None
            except jwt.PyJWTError:
                raise authentication_error("The token was not signed by a known key.") from None
        else:
            key = self.secret
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key,
                algorithms=self.algorithms,
                issuer=self.issuer,
                audience=self.audience,
                options={"require": ["exp", "sub"]},
                leeway=EXP_LEEWAY_SECONDS,
            )
        except jwt.ExpiredSignatureError:
            raise authentication_error("The bearer token has expired.") from None
        except jwt.PyJWTError:
            raise authentication_error("The bearer token is not valid.") from None
        exp = claims.get("exp")
        if isinstance(exp, bool) or not isinstance(exp, (int, float)):  # PyJWT accepts a numeric string
            raise authentication_error("The bearer token's exp must be a number.")
        if exp + EXP_LEEWAY_SECONDS <= time.time():  # PyJWT's check, on the clock the kept claims use
            raise authentication_error("The bearer token has expired.")
        if exp > time.time() + MAX_TOKEN_LIFETIME_SECONDS:  # a token that never expires is a leak that never ends
            raise authentication_error("The bearer token's exp is more than a year ahead.")
        sub = claims.get("sub")
        if not isinstance(sub, str) or not sub.strip() or len(sub) > 255 or not is_clean_identifier(sub):
            raise authentication_error("The bearer token has no usable subject.")
        return claims

    def authenticate_request(self) -> str:
        """Verify the request's bearer token; return and remember the caller's id."""
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise authentication_error()
        claims = self.verify(token.strip())
        g.user_id = claims["sub"]
        scope = claims.get("scope")
        g.token_scopes = frozenset(scope.split()) if isinstance(scope, str) else frozenset()
        return str(claims["sub"])


# A service token (an internal service, not a person) carrying this scope may
# report usage in, and read the capacity of, any workspace.
USAGE_SCOPE = "billing:usage"


def has_scope(scope: str) -> bool:
    """Whether the request's token carries `scope` (space-separated `scope` claim)."""
    return scope in getattr(g, "token_scopes", frozenset())


def mint_token(
    config: Config,
    user_id: str,
    *,
    ttl_seconds: int = 86400,
    now: int | None = None,
    scope: str | None = None,
) -> str:
    """A token for `user_id` signed with JWT_SECRET (for development and tests)."""
    if not config.jwt_secret:
        raise RuntimeError("minting needs JWT_SECRET (tokens from a JWKS issuer come from it)")
    issued = int(time.time()) if now is None else now
    claims: dict[str, Any] = {"sub": user_id, "iat": issued, "exp": issued + ttl_seconds}
    if config.jwt_issuer:
        claims["iss"] = config.jwt_issuer
    if config.jwt_audience:
        claims["aud"] = config.jwt_audience
    if scope:
        claims["scope"] = scope
    return jwt.encode(claims, config.jwt_secret, algorithm="HS256")
