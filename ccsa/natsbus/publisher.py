"""Publish line-protocol job events to NATS from trio, through nats-py on its own asyncio thread.

nats-py runs on a private asyncio loop (``ccsa.natsbus.asyncio_thread``); settings are checked
up front by ``ccsa.natsbus.natsconf``.

Delivery rule: ``publish`` succeeds only when the server has the message. A message is handed to
nats-py only while connected (nats-py's reconnect buffer would otherwise hold it in memory,
where a crash loses it), and success is reported only after a PING/PONG round trip on the same
connection that carried the PUB (one flush per batch of concurrent publishes). If the connection
was replaced in between, or anything fails or times out, ``PublishError`` is raised and the
caller (the daemon's durable outbox) keeps the event and retries: at-least-once, never silent
loss. The flusher runs only after nats-py's own flusher task has written the PUBs (both are
woken in FIFO order; ``pending_data_size`` is checked as well), because nats-py writes PING
straight to the socket while PUBs wait in its buffer.

Connection: ``max_reconnect_attempts=-1`` and retries of the first connect too, so the daemon
starts while NATS is down; the last connection error is kept for messages and ``doctor``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
from collections.abc import Coroutine, Sequence
from types import TracebackType
from typing import Any, TypeVar

import trio

from ccsa.errors import ConfigError, PublishError
from ccsa.natsbus.asyncio_thread import AsyncioThread
from ccsa.natsbus.natsconf import (
    UPSTREAM_DEFAULT_SUBJECT,
    check_creds,
    check_seed,
    describe,
    read_file,
)

__all__ = ["Publisher"]

log = logging.getLogger(__name__)

T = TypeVar("T")


class Publisher:
    """Trio-facing NATS publisher (nats-py on a private asyncio thread).

    Use as ``async with Publisher(...) as pub: await pub.publish(line)``. Entering never waits
    for the server; ``publish`` raises ``PublishError`` while not connected.
    """

    def __init__(
        self,
        servers: str,
        *,
        subject: str,
        user: str | None = None,
        password: str | None = None,
        creds_file: str | None = None,
        nkey_seed_file: str | None = None,
        name: str = "ccsa",
        connect_timeout: float = 5.0,
        reconnect_wait: float = 2.0,
        source: str = "config",
    ) -> None:
        if not subject or any(ch.isspace() for ch in subject):
            raise ConfigError(source, f"invalid NATS subject {subject!r}", key="natsSubject")
        if creds_file:
            check_creds(creds_file)
        if nkey_seed_file:
            check_seed(
                read_file(nkey_seed_file, "natsNKeySeedFile"), nkey_seed_file, "natsNKeySeedFile"
            )
        self.servers = servers
        self.subject = subject
        self._options: dict[str, Any] = {
            "servers": [servers],
            "name": name,
            "connect_timeout": connect_timeout,
            "reconnect_time_wait": reconnect_wait,
            "allow_reconnect": True,
            "max_reconnect_attempts": -1,
        }
        if user:
            self._options["user"] = user
            self._options["password"] = password or ""
        if creds_file:
            self._options["user_credentials"] = creds_file
        if nkey_seed_file:
            self._options["nkeys_seed"] = nkey_seed_file
        self._reconnect_wait = reconnect_wait
        self.last_error: str | None = None
        #: The server's refusal of our credentials, kept until a connect succeeds: a reset or
        #: EOF that follows it on the next attempt must not hide the cause from the operator.
        self.auth_error: str | None = None
        # Owned by the asyncio thread:
        self._worker: AsyncioThread | None = None
        self._nc: Any = None
        self._supervisor: asyncio.Task[None] | None = None
        self._flusher: asyncio.Task[None] | None = None
        self._kick: asyncio.Event | None = None
        self._up: asyncio.Event | None = None
        self._closing = False
        self._waiters: list[tuple[Any, int, asyncio.Future[None]]] = []

    @classmethod
    def from_config(cls, cfg: Any) -> Publisher:
        """Build from a ``ccsa.config.Config`` (``nats_*`` attributes)."""
        secret = getattr(cfg, "nats_password", None)
        getter = getattr(secret, "get", None)
        password = getter() if callable(getter) else secret
        server = getattr(cfg, "nats_server", "")
        if not server:
            raise ConfigError(str(getattr(cfg, "path", "config")), "NATS is off", key="natsServer")
        host = f"[{server}]" if ":" in server and not server.startswith("[") else server
        return cls(
            f"nats://{host}:{getattr(cfg, 'nats_port', 4222)}",
            subject=getattr(cfg, "nats_subject", UPSTREAM_DEFAULT_SUBJECT),
            user=getattr(cfg, "nats_user", None) or None,
            password=password or None,
            creds_file=getattr(cfg, "nats_creds_file", None) or None,
            nkey_seed_file=getattr(cfg, "nats_nkey_seed_file", None) or None,
            source=str(getattr(cfg, "path", "config")),
        )

    # ------------------------------------------------------------- trio side

    @property
    def connected(self) -> bool:
        """True while the client holds an established connection."""
        nc = self._nc
        return nc is not None and bool(nc.is_connected)

    async def __aenter__(self) -> Publisher:
        worker = AsyncioThread("ccsa-nats")
        worker.start()
        self._worker = worker
        await self._call(self._start(), None)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self, timeout: float = 5.0) -> None:
        """Flush what was handed over, close the connection, stop the thread.

        Never raises PublishError: a close that fails (nats-py cancelled while it was still
        connecting, seen with a server that refuses the credentials) loses nothing, since
        every event not confirmed is still in the caller's outbox; it is logged."""
        worker = self._worker
        if worker is None:
            return
        with trio.CancelScope(shield=True):
            try:
                await self._call(self._stop(timeout), timeout + 1.0)
            except PublishError as exc:
                log.warning("NATS %s: closing the connection failed: %s", self.servers, exc)
            finally:
                self._worker = None
                await worker.stop()

    async def publish(self, payload: bytes, *, timeout: float = 5.0) -> None:
        """Publish one message; return only when the server has it, else ``PublishError``."""
        await self._call(self._publish(payload, timeout), timeout + 1.0)

    async def publish_many(self, payloads: Sequence[bytes], *, timeout: float = 5.0) -> None:
        """Publish several messages (one NATS message each, in order) with one confirmation
        round trip; all are confirmed, or ``PublishError`` and the caller retries all of them."""
        if payloads:
            await self._call(self._publish_many(payloads, timeout), timeout + 1.0)

    async def wait_connected(self, timeout: float) -> None:
        """Wait until connected; ``PublishError`` with the last connection error otherwise."""
        await self._call(self._wait_connected(timeout), timeout + 1.0)

    async def _call(self, coro: Coroutine[Any, Any, T], timeout: float | None) -> T:
        """Run ``coro`` on the NATS thread; map a missing thread or a timeout to PublishError."""
        worker = self._worker
        if worker is None:
            coro.close()
            raise PublishError(f"NATS {self.servers}: publisher is not running")
        try:
            return await worker.call(coro, timeout)
        except trio.TooSlowError:
            raise PublishError(f"NATS {self.servers}: no answer in {timeout:g} s") from None
        except concurrent.futures.CancelledError:
            raise PublishError(f"NATS {self.servers}: publish cancelled") from None

    def _not_connected(self, what: str) -> str:
        detail = f" (last error: {self.last_error})" if self.last_error else ""
        if self.auth_error and self.auth_error != self.last_error:
            detail += f" (the server refused the credentials before: {self.auth_error})"
        return f"NATS {self.servers}: {what}{detail}"

    # ------------------------------------------------------------- asyncio side

    async def _start(self) -> None:
        self._closing = False
        self._kick = asyncio.Event()
        self._up = asyncio.Event()
        self._supervisor = asyncio.create_task(self._supervise())
        self._flusher = asyncio.create_task(self._flush_loop())

    async def _wait_connected(self, timeout: float) -> None:
        assert self._up is not None
        try:
            await asyncio.wait_for(self._up.wait(), timeout)
        except TimeoutError:
            raise PublishError(self._not_connected(f"not connected after {timeout:g} s")) from None

    def _note_error(self, exc: BaseException) -> None:
        text = describe(exc)
        self.last_error = text
        if "authoriz" in text.lower() or "authentic" in text.lower():
            self.auth_error = text

    async def _supervise(self) -> None:
        """Keep one client connected forever (first connect retried too)."""
        import nats.aio.client

        up = self._up
        assert up is not None

        while True:
            closed = asyncio.Event()
            nc = nats.aio.client.Client()

            async def on_error(exc: Exception) -> None:
                self._note_error(exc)

            async def on_disconnect() -> None:
                up.clear()
                if not self._closing:
                    log.warning("NATS %s: disconnected", self.servers)

            async def on_reconnect() -> None:
                up.set()
                log.info("NATS %s: reconnected", self.servers)

            async def on_closed(event: asyncio.Event = closed) -> None:
                up.clear()
                event.set()

            try:
                await nc.connect(
                    **self._options,
                    error_cb=on_error,
                    disconnected_cb=on_disconnect,
                    reconnected_cb=on_reconnect,
                    closed_cb=on_closed,
                )
            except asyncio.CancelledError:
                await self._close_quietly(nc)
                raise
            except Exception as exc:
                self._note_error(exc)
                await self._close_quietly(nc)
                await asyncio.sleep(self._reconnect_wait)
                continue
            log.info("NATS %s: connected", self.servers)
            self.auth_error = None
            self._nc = nc
            up.set()
            await closed.wait()
            self._nc = None
            await asyncio.sleep(self._reconnect_wait)

    @staticmethod
    async def _close_quietly(nc: Any) -> None:
        try:
            await nc.close()
        except Exception:  # closing a half-open client: nothing to save
            pass

    async def _publish(self, payload: bytes, timeout: float) -> None:
        await self._publish_many((payload,), timeout)

    async def _publish_many(self, payloads: Sequence[bytes], timeout: float) -> None:
        nc = self._nc
        if nc is None or not nc.is_connected:
            raise PublishError(self._not_connected("not connected; the event is kept for retry"))
        generation = nc.stats["reconnects"]
        try:
            for payload in payloads:
                await nc.publish(self.subject, payload)
        except Exception as exc:
            raise PublishError(f"NATS {self.servers}: publish failed: {describe(exc)}") from exc
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append((nc, generation, waiter))
        assert self._kick is not None
        self._kick.set()
        try:
            await asyncio.wait_for(asyncio.shield(waiter), timeout)
        except TimeoutError:
            raise PublishError(
                f"NATS {self.servers}: server did not confirm within {timeout:g} s"
            ) from None

    async def _flush_loop(self) -> None:
        """Confirm batches of publishes with one PING/PONG round trip each."""
        assert self._kick is not None
        while True:
            await self._kick.wait()
            self._kick.clear()
            batch, self._waiters = self._waiters, []
            if batch:
                await self._confirm(batch)

    async def _confirm(self, batch: list[tuple[Any, int, asyncio.Future[None]]]) -> None:
        error: str | None = None
        nc = self._nc
        try:
            if nc is None or not nc.is_connected:
                raise ConnectionError("connection lost before the server confirmed")
            for _ in range(100):  # let nats-py's flusher write the PUBs before our PING
                if nc.pending_data_size == 0:
                    break
                await asyncio.sleep(0)
            await nc.flush(timeout=5)
        except Exception as exc:
            error = describe(exc)
        for client, generation, waiter in batch:
            if waiter.done():
                continue
            if error is None and (client is not nc or nc.stats["reconnects"] != generation):
                error_text: str | None = "connection replaced before the server confirmed"
            else:
                error_text = error
            if error_text is None:
                waiter.set_result(None)
            else:
                waiter.set_exception(PublishError(f"NATS {self.servers}: {error_text}"))

    async def _stop(self, timeout: float) -> None:
        self._closing = True
        for task in (self._supervisor, self._flusher):
            if task is not None:
                task.cancel()
        for task in (self._supervisor, self._flusher):
            if task is not None:
                try:
                    await task
                except asyncio.CancelledError:
                    pass
        nc, self._nc = self._nc, None
        for _, _, waiter in self._waiters:
            if not waiter.done():
                waiter.set_exception(PublishError(f"NATS {self.servers}: publisher closed"))
        self._waiters = []
        if nc is not None:
            try:
                if nc.is_connected:
                    await nc.flush(timeout=max(1, int(timeout)))
            except Exception as exc:
                log.warning("NATS %s: flush at shutdown failed: %s", self.servers, describe(exc))
            await self._close_quietly(nc)
