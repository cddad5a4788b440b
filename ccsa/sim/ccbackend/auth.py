"""cc-backend's API authentication for the stand-in: EdDSA JWTs, the IP allow-list, the role rule.

Mirrors ``internal/auth/jwt.go`` AuthViaJWT + ``AuthAPI`` (ccbackend.md §1.3): the token comes
from ``X-Auth-Token``, else ``Authorization: Bearer``; only EdDSA (Ed25519) is accepted; ``exp``
and ``nbf`` are checked, ``iat`` is not; ``sub`` is required; the roles must be exactly
``["api"]`` or include both ``admin`` and ``api``. Every failure is a 401 with golang-jwt's or
cc-backend's text (golang-jwt v5 ``parser.go``/``errors.go``). Keys use cc-backend's environment
formats (``JWT_PUBLIC_KEY`` = base64 of the 32-byte raw public key, ``JWT_PRIVATE_KEY`` = base64
of Go's 64-byte seed‖public form).

Ed25519 comes from PyNaCl, which the base install already has (nats-py[nkeys] needs it), so the
stand-in and the demo check real tokens on a plain ``pip install`` with no extras. The JWS
compact form (three base64url parts, one algorithm) is written out here rather than taken from
PyJWT: PyJWT's EdDSA needs ``cryptography``, a large compiled dependency the daemon never uses.
The tests cross-check this code against tokens PyJWT signs.
"""

from __future__ import annotations

import base64
import binascii
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import msgspec
from nacl.exceptions import BadSignatureError
from nacl.signing import SigningKey, VerifyKey

__all__ = ["AuthConfig", "AuthError"]


class AuthError(Exception):
    """Authentication failed; ``str(exc)`` is the ``error`` text of the 401 body."""


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64url(text: str) -> bytes:
    """RawURLEncoding as golang-jwt decodes it (padding tolerated)."""
    text = text.rstrip("=")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _json_part(part: str, what: str) -> dict[str, Any]:
    try:
        raw = _unb64url(part)
    except (binascii.Error, ValueError):
        raise AuthError(f"token is malformed: could not base64 decode {what}") from None
    try:
        value = msgspec.json.decode(raw)
    except (msgspec.DecodeError, UnicodeDecodeError):
        raise AuthError(f"token is malformed: could not JSON decode {what}") from None
    if not isinstance(value, dict):
        raise AuthError(f"token is malformed: could not JSON decode {what}")
    return value


@dataclass
class AuthConfig:
    """The key material and allow-list of the stand-in's ``/api`` group.

    Args:
        public_key: verifies tokens.
        private_key: signs tokens in ``issue`` (None when only a public key was given).
        allowed_ips: v1.5 ``main.api-allowed-ips``: empty = no restriction, ``["*"]`` = any.
        clock: epoch seconds for ``exp``/``nbf`` (and ``iat`` of issued tokens).
    """

    public_key: VerifyKey
    private_key: SigningKey | None = None
    allowed_ips: Sequence[str] = ()
    clock: Callable[[], float] = time.time

    def __post_init__(self) -> None:
        self._claims: dict[str, dict[str, Any]] = {}  # verified tokens -> claims (a cache)

    def __repr__(self) -> str:
        return f"AuthConfig(public_key={self.public_key_b64!r}, allowed_ips={self.allowed_ips!r})"

    @classmethod
    def generate(cls, *, allowed_ips: Sequence[str] = ()) -> AuthConfig:
        """A fresh Ed25519 keypair (tests, the demo)."""
        private = SigningKey.generate()
        return cls(private.verify_key, private, allowed_ips)

    @classmethod
    def from_env(cls, env: Mapping[str, str], *, allowed_ips: Sequence[str] = ()) -> AuthConfig:
        """Read ``JWT_PUBLIC_KEY`` (required) and ``JWT_PRIVATE_KEY`` (optional) from ``env``.

        Raises:
            ValueError: naming the variable that is missing or malformed.
        """
        pub_b64 = env.get("JWT_PUBLIC_KEY", "")
        if not pub_b64:
            raise ValueError("JWT_PUBLIC_KEY is not set")
        try:
            public = VerifyKey(_raw32(base64.b64decode(pub_b64, validate=True)))
        except ValueError as exc:
            raise ValueError(f"JWT_PUBLIC_KEY is not base64 of a 32-byte key: {exc}") from None
        private = None
        if env.get("JWT_PRIVATE_KEY"):
            try:
                raw = base64.b64decode(env["JWT_PRIVATE_KEY"], validate=True)
                private = SigningKey(_raw32(raw[:32]))
            except ValueError as exc:
                raise ValueError(f"JWT_PRIVATE_KEY is not base64 of Go's key: {exc}") from None
        return cls(public, private, allowed_ips)

    @property
    def public_key_b64(self) -> str:
        """cc-backend's ``JWT_PUBLIC_KEY`` form."""
        return base64.b64encode(bytes(self.public_key)).decode()

    @property
    def private_key_b64(self) -> str:
        """cc-backend's ``JWT_PRIVATE_KEY`` form (seed‖public, 64 bytes)."""
        if self.private_key is None:
            raise ValueError("no private key: this AuthConfig can only verify tokens")
        return base64.b64encode(bytes(self.private_key) + bytes(self.public_key)).decode()

    def issue(
        self,
        sub: str | None = "ccsa",
        roles: Sequence[str] | None = ("api",),
        exp: float | None = None,
        *,
        nbf: float | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> str:
        """Sign a token like cc-backend does: ``{sub, roles, iat}`` plus ``exp``/``nbf`` if given.

        ``sub=None`` or ``roles=None`` leave the claim out (for negative tests).
        """
        if self.private_key is None:
            raise ValueError("no private key: this AuthConfig can only verify tokens")
        claims: dict[str, Any] = {"iat": int(self.clock())}
        if sub is not None:
            claims["sub"] = sub
        if roles is not None:
            claims["roles"] = list(roles)
        if exp is not None:
            claims["exp"] = int(exp)
        if nbf is not None:
            claims["nbf"] = int(nbf)
        claims.update(extra or {})
        header = _b64url(b'{"alg":"EdDSA","typ":"JWT"}')
        signing_input = f"{header}.{_b64url(msgspec.json.encode(claims))}"
        signature = self.private_key.sign(signing_input.encode("ascii")).signature
        return f"{signing_input}.{_b64url(signature)}"

    # ------------------------------------------------------------------ verification

    def check(
        self,
        headers: Mapping[str, str],
        client_ip: str,
        allowed_ips: Sequence[str] | None = None,
    ) -> str:
        """Authenticate one ``/api`` request; returns the user (``sub``).

        Args:
            headers: request headers with lower-case names.
            client_ip: the peer address (``X-Real-Ip`` / ``X-Forwarded-For`` take precedence).
            allowed_ips: overrides ``self.allowed_ips`` when given.

        Raises:
            AuthError: with the text cc-backend puts into the 401 body.
        """
        token = headers.get("x-auth-token", "")
        if not token:
            authz = headers.get("authorization", "")
            token = authz.removeprefix("Bearer ") if authz.startswith("Bearer ") else ""
        claims = self._verify(token) if token else None
        # securedCheck: a nil user fails before the IP test.
        if claims is None:
            raise AuthError("no user for secured check")
        check_ip(headers, client_ip, self.allowed_ips if allowed_ips is None else allowed_ips)
        roles = claims.get("roles")
        names = [r for r in roles if isinstance(r, str)] if isinstance(roles, list) else []
        if not (names == ["api"] or (len(names) >= 2 and {"admin", "api"} <= set(names))):
            raise AuthError("unauthorized")
        return str(claims["sub"])

    def _verify(self, token: str) -> dict[str, Any]:
        claims = self._claims.get(token)
        if claims is None:
            claims = self._decode(token)
            if len(self._claims) > 1024:
                self._claims.clear()
            self._claims[token] = claims
        now = self.clock()
        # golang-jwt v5 validation of the time claims, on every use.
        exp = claims.get("exp")
        if isinstance(exp, int | float) and now > exp:
            raise AuthError("token has invalid claims: token is expired")
        nbf = claims.get("nbf")
        if isinstance(nbf, int | float) and now < nbf:
            raise AuthError("token has invalid claims: token is not valid yet")
        return claims

    def _decode(self, token: str) -> dict[str, Any]:
        """golang-jwt's ParseWithClaims order: segments, header, claims, alg, signature."""
        parts = token.split(".")
        if len(parts) != 3:
            raise AuthError("token is malformed: token contains an invalid number of segments")
        header = _json_part(parts[0], "header")
        claims = _json_part(parts[1], "claim")
        if header.get("alg") != "EdDSA":
            raise AuthError(
                "token is unverifiable: error while executing keyfunc: only Ed25519/EdDSA supported"
            )
        try:
            signature = _unb64url(parts[2])
        except (binascii.Error, ValueError):
            raise AuthError("token is malformed: could not base64 decode signature") from None
        try:
            self.public_key.verify(f"{parts[0]}.{parts[1]}".encode("ascii"), signature)
        except (BadSignatureError, ValueError, UnicodeEncodeError):
            raise AuthError("token signature is invalid: ed25519: verification error") from None
        if not isinstance(claims.get("sub"), str):
            raise AuthError("missing 'sub' claim in JWT")
        return claims


def _raw32(raw: bytes) -> bytes:
    if len(raw) != 32:
        raise ValueError(f"{len(raw)} bytes, not 32")
    return raw


def check_ip(headers: Mapping[str, str], client_ip: str, allowed_ips: Sequence[str]) -> None:
    """v1.5 ``api-allowed-ips``: empty = anyone, ``*`` = anyone, else the IP must be listed."""
    ip = _strip_port(headers.get("x-real-ip") or headers.get("x-forwarded-for") or client_ip)
    if allowed_ips and "*" not in allowed_ips and ip not in allowed_ips:
        raise AuthError(f"unknown ip: {ip}")


def _strip_port(addr: str) -> str:
    addr = addr.split(",")[0].strip()
    if addr.startswith("["):
        return addr[1:].split("]")[0]
    if addr.count(":") == 1:
        return addr.split(":")[0]
    return addr
