"""A stand-in for the parts of Supabase Auth the service relies on: its access tokens and its JWKS.

Real keys (cryptography), tokens minted with PyJWT, and a JWKS endpoint served over loopback
HTTP that counts its fetches and can be told to rotate keys, fail or answer garbage.
"""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm, RSAAlgorithm
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.loopback import serving

ISSUER = "https://test-project.supabase.co/auth/v1"
JWKS_PATH = "/auth/v1/.well-known/jwks.json"
DROP = object()  # a claim given this value is left out of the token


def claims(*, issuer: str = ISSUER, **overrides: Any) -> dict[str, Any]:
    """Claims of a valid Supabase access token, with `overrides` applied (DROP removes a claim)."""
    now = int(time.time())
    base: dict[str, Any] = {
        "iss": issuer,
        "sub": str(uuid.uuid4()),
        "aud": "authenticated",
        "role": "authenticated",
        "exp": now + 3600,
        "iat": now,
        "session_id": str(uuid.uuid4()),
    }
    base.update(overrides)
    return {name: value for name, value in base.items() if value is not DROP}


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def hand_made(header: dict[str, Any], payload: dict[str, Any], sign: Callable[[bytes], bytes] | None = None) -> str:
    """A compact JWS built without PyJWT, which refuses to make forged ones."""
    signing_input = f"{b64url(json.dumps(header).encode())}.{b64url(json.dumps(payload).encode())}"
    signature = b64url(sign(signing_input.encode())) if sign else ""
    return f"{signing_input}.{signature}"


@dataclass(frozen=True)
class Signer:
    kid: str
    alg: str
    private_key: Any

    def jwk(self, **extra: Any) -> dict[str, Any]:
        algorithm = RSAAlgorithm if self.alg == "RS256" else ECAlgorithm
        data: dict[str, Any] = algorithm.to_jwk(self.private_key.public_key(), as_dict=True)
        return {**data, "kid": self.kid, "alg": self.alg, "use": "sig", **extra}

    def token(self, payload: dict[str, Any] | None = None, *, kid: str | None = None, **header: Any) -> str:
        headers = {"kid": kid or self.kid, **header}
        return jwt.encode(claims() if payload is None else payload, self.private_key, self.alg, headers=headers)

    def public_pem(self) -> bytes:
        pem: bytes = self.private_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return pem


def ec_signer(kid: str) -> Signer:
    return Signer(kid, "ES256", ec.generate_private_key(ec.SECP256R1()))


@dataclass
class JWKSServer:
    """The state behind the loopback JWKS endpoint; tests change it between requests."""

    url: str = ""
    base_url: str = ""  # what SUPABASE_URL would be
    keys: list[dict[str, Any]] = field(default_factory=list)
    mode: str = "ok"  # ok | error | garbage | not_an_object | empty
    fetches: int = 0

    async def endpoint(self, request: Request) -> Response:
        self.fetches += 1
        if self.mode == "error":
            return Response("upstream exploded", status_code=500)
        if self.mode == "garbage":
            return Response("<html>not json", media_type="application/json")
        if self.mode == "not_an_object":
            return JSONResponse(["keys"])
        if self.mode == "empty":
            return JSONResponse({"keys": []})
        return JSONResponse({"keys": self.keys})


@contextmanager
def jwks_serving(*signers: Signer) -> Iterator[JWKSServer]:
    """Serve the signers' public keys at `{url}` + JWKS_PATH on a loopback port; `server.url` is the JWKS URL."""
    server = JWKSServer(keys=[signer.jwk() for signer in signers])
    with serving(Starlette(routes=[Route(JWKS_PATH, server.endpoint)])) as base_url:
        server.base_url = base_url
        server.url = base_url + JWKS_PATH
        yield server
