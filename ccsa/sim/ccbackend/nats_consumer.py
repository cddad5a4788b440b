"""The stand-in cc-backend's NATS side: subscribe to the job-event subject and feed start/stop.

Like cc-backend with ``main.api-subjects`` (shared ``docs/ccbackend.md`` §8.1–§8.2, §11): core
NATS subscribe (no queue group, no reply, no ack), each message decoded with
``ccsa.natsbus.lineproto.decode`` (any syntax error drops the whole message), each ``job`` event
handed to the SAME ``Backend.start_job`` / ``stop_job`` as REST, nothing sent back. Every outcome
is recorded in ``outcomes`` so tests can assert on what cc-backend would only have logged.

nats-py runs on its own asyncio thread (``ccsa.natsbus.asyncio_thread.AsyncioThread``, the same
bridge as the publisher); ``Backend`` holds its own lock, so calling it from that thread is safe.
Messages are processed one at a time in arrival order (cc-backend's 8 workers may reorder a
back-to-back start/stop; this stand-in does not reproduce that race).
"""

from __future__ import annotations

import logging
import threading
from typing import Any, NamedTuple, Protocol

import trio

from ccsa.natsbus.asyncio_thread import AsyncioThread
from ccsa.natsbus.lineproto import LineProtocolError, decode

__all__ = ["NatsConsumer", "Outcome"]

log = logging.getLogger(__name__)


class _Reply(Protocol):
    status: int
    body: bytes

    @property
    def error(self) -> str | None: ...


class _Backend(Protocol):
    def start_job(self, raw: bytes, *, source: str = ...) -> Any: ...

    def stop_job(self, raw: bytes, *, source: str = ...) -> Any: ...


class Outcome(NamedTuple):
    """What happened to one event (``function`` start_job/stop_job) or one dropped message
    (``function`` ``parse_error``, ``status`` 0) or one skipped line (``skipped``, 0)."""

    function: str
    status: int
    message: str


class NatsConsumer:
    """Subscribe to ``subject`` on ``servers`` and apply every job event to ``backend``."""

    def __init__(
        self,
        backend: _Backend,
        servers: str,
        subject: str,
        *,
        user: str | None = None,
        password: str | None = None,
        creds_file: str | None = None,
        nkey_seed_file: str | None = None,
        name: str = "cc-backend-standin",
    ) -> None:
        self.backend = backend
        self.servers = servers
        self.subject = subject
        self.outcomes: list[Outcome] = []
        self._options: dict[str, Any] = {
            "servers": [servers],
            "name": name,
            "allow_reconnect": True,
            "max_reconnect_attempts": -1,
            "reconnect_time_wait": 0.2,
        }
        if user:
            self._options.update(user=user, password=password or "")
        if creds_file:
            self._options["user_credentials"] = creds_file
        if nkey_seed_file:
            self._options["nkeys_seed"] = nkey_seed_file
        self._lock = threading.Lock()

    def handle(self, data: bytes) -> list[Outcome]:
        """Process one NATS message (pure of I/O apart from the Backend): decode, start/stop."""
        results: list[Outcome] = []
        skipped: list[str] = []
        try:
            events = decode(data, skipped)
        except LineProtocolError as exc:
            log.warning("NATS job event dropped: %s", exc)
            results.append(Outcome("parse_error", 0, str(exc)))
        else:
            results.extend(Outcome("skipped", 0, reason) for reason in skipped)
            for event in events:
                if event.function == "start_job":
                    reply = self.backend.start_job(event.raw, source="nats")
                else:
                    reply = self.backend.stop_job(event.raw, source="nats")
                text = reply.error or reply.body.decode(errors="replace").strip()
                results.append(Outcome(event.function, reply.status, text))
        with self._lock:
            self.outcomes.extend(results)
        return results

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Connect, subscribe, report started, and consume until cancelled."""
        worker = AsyncioThread("standin-nats")
        worker.start()
        try:
            nc = await worker.call(self._subscribe())
            task_status.started()
            try:
                await trio.sleep_forever()
            finally:
                with trio.CancelScope(shield=True):
                    with trio.move_on_after(5):
                        await worker.call(nc.close())
        finally:
            await worker.stop()

    async def _subscribe(self) -> Any:
        import nats

        async def on_message(msg: Any) -> None:
            self.handle(bytes(msg.data))

        nc = await nats.connect(**self._options)
        await nc.subscribe(self.subject, cb=on_message)
        await nc.flush()
        return nc

    async def wait_for(self, count: int, timeout: float = 10.0) -> list[Outcome]:
        """Wait (in trio, while ``run`` is active) until ``count`` outcomes are recorded."""
        with trio.fail_after(timeout):
            while True:
                with self._lock:
                    if len(self.outcomes) >= count:
                        return list(self.outcomes)
                await trio.sleep(0.01)
