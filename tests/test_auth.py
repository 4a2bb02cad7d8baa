"""Bearer tokens: only valid, configured, unexpired tokens get in."""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.warnings import InsecureKeyLengthWarning

from app import create_app
from billing import tokens
from billing.config import Config
from billing.errors import ApiError
from billing.tokens import TokenVerifier
from tests.helpers import TEST_ENV, assert_error

SECRET = TEST_ENV["JWT_SECRET"]


def claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    base = {
        "sub": "alice",
        "iat": now,
        "exp": now + 600,
        "iss": TEST_ENV["JWT_ISSUER"],
        "aud": TEST_ENV["JWT_AUDIENCE"],
    }
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


def hs512_token() -> str:
    """Signed with HS512, an algorithm the service is not configured for. The test secret is short
    for HS512, so PyJWT warns about its length: expected here, and beside the point."""
    with pytest.warns(InsecureKeyLengthWarning):
        return jwt.encode(claims(), SECRET, algorithm="HS512")


def get_workspaces(client: Any, token: str | None) -> Any:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    return client.get("/workspaces", headers=headers)


def test_valid_token_is_accepted(client: Any) -> None:
    token = jwt.encode(claims(), SECRET, algorithm="HS256")
    response = get_workspaces(client, token)
    assert response.status_code == 200
    assert response.json == {"data": [], "has_more": False}


@pytest.mark.parametrize(
    "token",
    [
        pytest.param(None, id="missing"),
        pytest.param("not-a-jwt", id="malformed"),
        pytest.param(jwt.encode(claims(exp=int(time.time()) - 120), SECRET, algorithm="HS256"), id="expired"),
        pytest.param(
            jwt.encode(claims(), "another-secret-of-sufficient-length-000000", algorithm="HS256"), id="forged"
        ),
        pytest.param(jwt.encode(claims(iss="https://evil.test/"), SECRET, algorithm="HS256"), id="wrong-issuer"),
        pytest.param(jwt.encode(claims(aud="someone-else"), SECRET, algorithm="HS256"), id="wrong-audience"),
        pytest.param(jwt.encode(claims(exp=None), SECRET, algorithm="HS256"), id="no-exp"),
        pytest.param(jwt.encode(claims(sub=None), SECRET, algorithm="HS256"), id="no-sub"),
        pytest.param(hs512_token(), id="unconfigured-alg"),
    ],
)
def test_bad_tokens_are_401(client: Any, token: str | None) -> None:
    body = assert_error(get_workspaces(client, token), 401, "authentication_required")
    assert body["type"] == "authentication_error"


def _unsigned(payload: dict[str, Any]) -> str:
    def b64(data: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()

    return f"{b64({'alg': 'none', 'typ': 'JWT'})}.{b64(payload)}."


def test_alg_none_is_refused(client: Any) -> None:
    assert_error(get_workspaces(client, _unsigned(claims())), 401, "authentication_required")


def test_basic_scheme_is_refused(client: Any) -> None:
    token = jwt.encode(claims(), SECRET, algorithm="HS256")
    response = client.get("/workspaces", headers={"Authorization": f"Basic {token}"})
    assert_error(response, 401, "authentication_required")


# -- JWKS (RS256 / ES256) ----------------------------------------------------


class _JwksServer:
    def __init__(self, jwks: dict[str, Any]) -> None:
        body = json.dumps(jwks).encode()

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = HTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/.well-known/jwks.json"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def jwks_setup(database_url: str) -> Iterator[dict[str, Any]]:
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ec_key = ec.generate_private_key(ec.SECP256R1())
    keys = []
    for kid, key, alg in (("rsa1", rsa_key, "RS256"), ("ec1", ec_key, "ES256")):
        jwk = json.loads(jwt.algorithms.get_default_algorithms()[alg].to_jwk(key.public_key()))
        jwk.update(kid=kid, use="sig", alg=alg)
        keys.append(jwk)
    server = _JwksServer({"keys": keys})
    env = {k: v for k, v in TEST_ENV.items() if k != "JWT_SECRET"}
    app = create_app(Config.from_env({**env, "DATABASE_URL": database_url, "JWT_JWKS_URL": server.url}))
    yield {"client": app.test_client(), "rsa": rsa_key, "ec": ec_key}
    server.server.shutdown()


def test_jwks_rs256_and_es256_tokens_are_accepted(jwks_setup: dict[str, Any]) -> None:
    client = jwks_setup["client"]
    rs = jwt.encode(claims(), jwks_setup["rsa"], algorithm="RS256", headers={"kid": "rsa1"})
    es = jwt.encode(claims(), jwks_setup["ec"], algorithm="ES256", headers={"kid": "ec1"})
    assert get_workspaces(client, rs).status_code == 200
    assert get_workspaces(client, es).status_code == 200


def test_jwks_refuses_hs256_and_unknown_keys(jwks_setup: dict[str, Any]) -> None:
    client = jwks_setup["client"]
    # An HS256 token must not be accepted in JWKS mode (algorithm confusion).
    hs = jwt.encode(claims(), SECRET, algorithm="HS256")
    assert_error(get_workspaces(client, hs), 401, "authentication_required")
    stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    forged = jwt.encode(claims(), stranger, algorithm="RS256", headers={"kid": "rsa1"})
    assert_error(get_workspaces(client, forged), 401, "authentication_required")
    unknown_kid = jwt.encode(claims(), jwks_setup["rsa"], algorithm="RS256", headers={"kid": "nope"})
    assert_error(get_workspaces(client, unknown_kid), 401, "authentication_required")


def test_a_verified_token_is_kept_until_it_expires_and_for_a_minute_at_most(monkeypatch: Any) -> None:
    """The claims of a verified token are kept per process (one check a token, not one a request),
    never past the token's expiry, and re-checked after VERIFIED_FOR_SECONDS at the latest."""
    verifier = TokenVerifier(Config.from_env(TEST_ENV))
    decoded: list[str] = []
    decode = jwt.decode
    monkeypatch.setattr(jwt, "decode", lambda *a, **k: decoded.append("x") or decode(*a, **k))
    now = time.time()
    long_lived = jwt.encode(claims(exp=int(now) + 3600), SECRET, algorithm="HS256")
    assert verifier.verify(long_lived)["sub"] == "alice"
    assert verifier.verify(long_lived)["sub"] == "alice"
    assert len(decoded) == 1
    monkeypatch.setattr(time, "time", lambda: now + tokens.VERIFIED_FOR_SECONDS + 1)
    assert verifier.verify(long_lived)["sub"] == "alice"
    assert len(decoded) == 2  # checked again

    monkeypatch.setattr(time, "time", lambda: now)
    short_lived = jwt.encode(claims(exp=int(now) + 5), SECRET, algorithm="HS256")
    assert verifier.verify(short_lived)["sub"] == "alice"
    monkeypatch.setattr(time, "time", lambda: now + 5 + tokens.EXP_LEEWAY_SECONDS + 1)
    with pytest.raises(ApiError) as refused:
        verifier.verify(short_lived)
    assert refused.value.status == 401
