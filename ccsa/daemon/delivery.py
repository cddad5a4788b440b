"""Deliver the outbox: a dispatcher and N workers send starts/stops over REST and NATS.

Rules (SPEC §2, §4.2, §4.3; ccbackend.md §12):

* never a stop before its start, per channel (issue 17 item 1): the store offers a stop's POST
  once its start's POST is done, and its NATS publish once its start's row is gone, so an outage
  of one channel never holds back the other;
* REST 201/200 -> delivered (then NATS, when configured); 422 on start and 422/404 on stop ->
  done (cc-backend already has it; idempotent, no NATS); 400/401/403 -> parked with cc-backend's
  reason (a parked start takes its stops along, see `Store.park`), never retried on its own;
  transient failures (5xx, timeout, connection) -> retried with capped exponential backoff with
  jitter, per row, in memory (trio clock);
* a connection-level failure (no answer, 502/503/504) or a failed NATS publish also *pauses* that
  channel for everybody, then lets one probe row through at a time until something succeeds, so
  a down cc-backend is not hammered with every pending row;
* with REST on, NATS is published after a 201/200 only; with REST off, always; a failed publish
  keeps the row (``nats_pending``) and retries it: nothing is dropped;
* ``dry_run``: print ``{"kind": "start_job", "body": {...}}`` JSON lines instead of sending.

Everything is in the store before it is sent, so cancelling the workers at any point loses
nothing: what was not confirmed is sent again after a restart (422/404 make that harmless).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import sys
from collections.abc import Callable, Collection
from typing import Protocol, TextIO

import trio

from ccsa.ccbackend.answers import Endpoint, Outcome
from ccsa.daemon.channel import LOG_EVERY, Backoff, Channel, ChannelState
from ccsa.daemon.stats import Stats
from ccsa.daemon.store import OutboxRow, Store
from ccsa.errors import BackendBlocked, BackendRejected, BackendUnavailable, PublishError

log = logging.getLogger(__name__)

#: cc-backend v1.5.4 refuses a start within this many seconds after an earlier run of the same
#: job id and cluster (``secondsPerDay`` in internal/api/job.go).
RERUN_WINDOW = 86400.0
#: Seconds a row may wait before one WARNING names it (issue 17 item 8).
WARN_AFTER = 3600.0
#: Outbox rows read per dispatcher query.
BATCH = 256
#: Statuses that mean "cc-backend (or its proxy) is not there": pause, do not hammer.
_GATEWAY = frozenset({502, 503, 504})

#: Present in a start body exactly when a node has hardware threads: ``omit_defaults`` leaves
#: out ``hwthreads: null``, and JSON escapes a quote inside a string (no false match in a script).
_HWTHREADS_KEY = b'"hwthreads":'


class RestClient(Protocol):
    """What delivery needs of ``ccsa.ccbackend.client.BackendClient`` (its error protocol)."""

    async def post(self, endpoint: Endpoint, body: bytes) -> Outcome: ...


class NatsPublisher(Protocol):
    async def publish(self, payload: bytes) -> None: ...


class Delivery:
    """Drains the outbox into cc-backend (REST) and NATS. Start with ``nursery.start(d.run)``."""

    def __init__(
        self,
        store: Store,
        *,
        client: RestClient | None,
        publisher: NatsPublisher | None = None,
        nats_encode: Callable[[OutboxRow], bytes] | None = None,
        stats: Stats | None = None,
        now: Callable[[], float],
        workers: int = 8,
        dry_run: bool = False,
        out: TextIO | None = None,
        backoff: Backoff | None = None,
    ) -> None:
        if client is None and publisher is None and not dry_run:
            raise ValueError("delivery needs a REST client, a NATS publisher, or dry_run")
        self.store = store
        self.client = client
        self.publisher = publisher
        self.nats_encode = nats_encode
        self.stats = stats if stats is not None else Stats()
        self.now = now
        self.workers = max(1, workers)
        self.dry_run = dry_run
        self.out = out
        self.backoff = backoff or Backoff()
        self.rest_gate = Channel(self.backoff)
        self.nats_gate = Channel(self.backoff)
        self._in_flight: set[int] = set()
        self._retry_at: dict[int, float] = {}
        self._failures: dict[int, int] = {}
        self._wake = trio.Event()
        self._changed = trio.Event()
        self._dispatch_scope = trio.CancelScope()
        self._hurry: dict[str, set[int]] = {}  # jobs whose rows go before all others
        self._hurried: set[int] = set()  # ids of rows sent because of `hurry`, in flight
        self._warned: set[int] = set()  # ids of rows named by the WARN_AFTER warning

    # --- public ---------------------------------------------------------------------------

    def close(self) -> None:
        """Stop handing out rows; `run` returns once the rows in flight are finished."""
        self._dispatch_scope.cancel()

    def wake(self) -> None:
        """New rows were queued (or re-driven): look at the outbox again."""
        self._wake.set()

    def hurry(self, cluster: str, job_ids: Collection[int]) -> None:
        """Send these jobs' rows before any other (what a hook lookup queued), whenever their
        ids are: a poll may commit a sub-window of a backlog right after the lookup, and its
        thousands of newer rows must not go first. A hurried start that is sent hurries its
        job again, so the job's stop (not eligible before) follows at once too."""
        if job_ids:
            self._hurry.setdefault(cluster, set()).update(job_ids)
            self._wake.set()

    @property
    def in_flight(self) -> int:
        return len(self._in_flight)

    @property
    def waiting_retry(self) -> int:
        return len(self._retry_at)

    def paused_for(self) -> float:
        """Seconds the REST channel stays paused (0 when sending)."""
        return max(0.0, self.rest_gate.pause_until - trio.current_time())

    async def wait_empty(self) -> None:
        """Return once the outbox is empty (everything delivered, done or parked)."""
        while not self.store.outbox_empty():
            self._changed = trio.Event() if self._changed.is_set() else self._changed
            await self._changed.wait()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Dispatcher + workers, until cancelled. Cancellation loses nothing (see module doc)."""
        if self.client is None and not self.dry_run:
            # Rows queued while REST submission was on; it is now off (config changed).
            self.store.without_rest()
        send, receive = trio.open_memory_channel[OutboxRow](0)
        async with trio.open_nursery() as nursery:
            for _ in range(self.workers):
                nursery.start_soon(self._worker, receive.clone())
            receive.close()
            task_status.started()
            async with send:
                with self._dispatch_scope:
                    await self._dispatch(send)
            # close(): the channel is closed; workers finish the row they hold, then return.

    # --- dispatcher -----------------------------------------------------------------------

    def _gate(self, row: OutboxRow) -> Channel:
        return self.rest_gate if row.rest_pending else self.nats_gate

    async def _dispatch(self, send: trio.MemorySendChannel[OutboxRow]) -> None:
        """Scan the outbox in batches of `BATCH` rows (never the whole outbox in memory) and
        hand eligible rows to the workers; rows queued during a scan go first, newest first.

        A pass scans the rows that existed when it began, oldest first. Before each batch it
        looks for rows queued since (a hook event's start, a sub-window of a long poll) and
        scans those first, newest first, so a hook's start is sent within a batch or two: not
        behind the backlog (the Go adapter's hook events wait for the whole sync), nor behind
        a sub-window of thousands of rows committed just before it. Rows of jobs named by
        `hurry` (a hook lookup's) go before everything, between any two rows. A stop skipped
        because its start was still pending is found by the next pass.
        """
        while True:
            self._wake = trio.Event()
            progress = False
            top = self.store.max_id()
            base = 0  # cursor of the oldest-first scan over ids <= `limit`
            limit = top
            fresh: list[tuple[int, int]] = []  # (after, upto) ranges queued since, newest last
            while True:
                progress |= await self._offer_hurried(send)
                newest = self.store.max_id()
                if newest > top:
                    fresh.append((top, newest))
                    top = newest
                if fresh:
                    after, upto = fresh[-1]
                    rows = self.store.eligible(after, BATCH, upto, newest_first=True)
                    if not rows:
                        fresh.pop()
                        continue
                    fresh[-1] = (after, rows[-1].id - 1)
                else:
                    rows = self.store.eligible(base, BATCH, upto=limit)
                    if not rows:
                        break
                    base = rows[-1].id
                progress |= await self._offer(send, rows)
            if progress:
                continue
            now = trio.current_time()
            times = [*self._retry_at.values(), self.rest_gate.pause_until]
            times.append(self.nats_gate.pause_until)
            deadline = min((t for t in times if t > now), default=math.inf)
            with trio.move_on_at(deadline):
                await self._wake.wait()

    async def _offer_hurried(self, send: trio.MemorySendChannel[OutboxRow]) -> bool:
        """Offer the rows of the jobs `hurry` named; True if any was sent."""
        sent = False
        while self._hurry:
            hurry, self._hurry = self._hurry, {}
            for cluster, ids in hurry.items():
                sent |= await self._offer(send, self.store.eligible_jobs(cluster, ids), True)
        return sent

    async def _offer(
        self, send: trio.MemorySendChannel[OutboxRow], rows: list[OutboxRow], hurried: bool = False
    ) -> bool:
        """Send the rows that may go now to a worker; True if any was sent. Rows of hurried
        jobs (`hurry`) go in between as soon as they are named."""
        sent = False
        for listed in rows:
            if self._hurry and not hurried:
                sent |= await self._offer_hurried(send)
            now = trio.current_time()
            if listed.id in self._in_flight:
                continue
            if self._retry_at.get(listed.id, -math.inf) > now:
                continue
            # The batch was read before earlier sends finished: re-read the row so a row
            # completed meanwhile is not sent twice (and NATS-only rows are seen as such).
            row = self.store.get(listed.id)
            if row is None:
                continue
            gate = self._gate(row)
            if not gate.open(now):
                continue
            self._in_flight.add(row.id)
            if hurried:
                self._hurried.add(row.id)
            gate.in_flight += 1
            await send.send(row)
            sent = True
        return sent

    # --- workers --------------------------------------------------------------------------

    async def _worker(self, receive: trio.MemoryReceiveChannel[OutboxRow]) -> None:
        async with receive:
            async for row in receive:
                gate = self._gate(row)
                try:
                    await self._deliver(row)
                finally:
                    gate.in_flight -= 1
                    self._in_flight.discard(row.id)
                    if row.id in self._hurried:
                        self._hurried.discard(row.id)
                        if row.kind == "start":  # its stop may be eligible now
                            self.hurry(row.key.cluster, (row.key.job_id,))
                    self._wake.set()
                    self._changed.set()

    async def _deliver(self, row: OutboxRow) -> None:
        if self.dry_run:
            self._print(row)
            return
        if row.rest_pending and self.client is not None:
            await self._send_rest(row)
        elif row.nats_pending or row.rest_pending:
            await self._publish(_nats_only(row))

    def _print(self, row: OutboxRow) -> None:
        kind = b"start_job" if row.kind == "start" else b"stop_job"
        line = b'{"kind":"' + kind + b'","body":' + row.body + b"}"
        (self.out or sys.stdout).write(line.decode() + "\n")
        self.stats.dry_run_printed += 1
        self.store.nats_done(row, now=self.now())

    async def _send_rest(self, row: OutboxRow) -> None:
        assert self.client is not None
        endpoint: Endpoint = "start_job" if row.kind == "start" else "stop_job"
        what = f"{row.kind}_job of job {row.key.job_id} on {row.key.cluster}"
        try:
            outcome = await self.client.post(endpoint, row.body)
        except BackendBlocked as exc:
            self._rest_blocked(row, exc)
            return
        except BackendUnavailable as exc:
            self._rest_failed(row, what, exc)
            return
        except BackendRejected as exc:
            self._rest_rejected(row, what, exc)
            return
        self._channel_works(self.rest_gate, "REST")
        self._forget(row)
        if outcome.kind == "done":
            self._rest_done(row, what, outcome)
            return
        publish = self.publisher is not None
        self.store.rest_done(row, publish_nats=publish, now=self.now())
        if row.kind == "start":
            self.stats.starts_delivered += 1
            self.stats.without_resources += _HWTHREADS_KEY not in row.body
        else:
            self.stats.stops_delivered += 1
        log.debug("%s delivered (%s)", what, outcome.status)
        if publish and self.nats_gate.open(trio.current_time()):
            await self._publish(_nats_only(row))
        # else: the dispatcher publishes it once the NATS channel is open again; this worker
        # goes back to POSTing (a NATS outage never slows the REST channel down).

    def _rest_done(self, row: OutboxRow, what: str, outcome: Outcome) -> None:
        """cc-backend already has it (422 start, 422/404 stop), or refuses a rerun (#18)."""
        if row.kind == "start" and outcome.status == 422:
            first = self.store.earlier_run(row.key, RERUN_WINDOW)
            if first is not None:
                self._refused_rerun(row, first, outcome.message)
                return
        self.store.rest_done(row, publish_nats=False, now=self.now())
        if row.kind == "start":
            self.stats.starts_done += 1
        else:
            self.stats.stops_done += 1
        log.info("%s: cc-backend answered %s, already known: %s", what, outcome.status,
                 outcome.message)  # fmt: skip

    def _refused_rerun(self, row: OutboxRow, first: int, answer: str) -> None:
        """cc-backend v1.5.4 answers 422 to a start of a job id it has from a run that started
        less than 86,400 s before (``startJob`` in internal/api/job.go): the second run of a
        requeued or preempted job is missing from cc-backend. Not hidden: counted, one WARNING
        naming both runs, and parked with its stops (their bodies stay for ``redrive --list``)."""
        key = row.key
        reason = (
            f"cc-backend refused run {key.start_time} of job {key.job_id}: it has run {first} "
            f"of that job id and refuses a start less than {RERUN_WINDOW:.0f} s after a run it "
            f"has (cc-backend v1.5.4 internal/api/job.go startJob); its answer: {answer}"
        )
        self.stats.refused_reruns += 1
        n = self.store.park(row, 422, reason, self.now())
        log.warning("job %s on %s: %s; parked with %d stop(s), listed by redrive --list",
                    key.job_id, key.cluster, reason, n - 1)  # fmt: skip

    def _rest_rejected(self, row: OutboxRow, what: str, exc: BackendRejected) -> None:
        """cc-backend refused this row for good: park it (with its job's stops, for a start)."""
        self._channel_works(self.rest_gate, "REST")
        self._forget(row)
        n = self.store.park(row, exc.status, exc.reason, self.now())
        self.stats.rejections[exc.status] += 1
        also = f" (with {n - 1} stop(s) of the same job)" if n > 1 else ""
        log.warning("%s rejected by cc-backend with %s: %s; parked%s, re-drive it once fixed",
                    what, exc.status, exc.reason, also)  # fmt: skip

    def _rest_blocked(self, row: OutboxRow, exc: BackendBlocked) -> None:
        """cc-backend's channel refuses every request (401/403: the token; an answer that is not
        cc-backend's: a proxy): the row stays, the channel pauses with backoff, an ERROR at most
        every few minutes (issue 17 item 2). Never parked: nothing is wrong with the job."""
        self.stats.blocked_answers[str(exc.status or 0)] += 1
        self.store.failed(row, f"{exc.status}: {exc.reason}")
        self._forget(row)  # the channel's pause paces the retries, not the row's own backoff
        self._warn_if_old(row, exc.reason)
        gate, now = self.rest_gate, trio.current_time()
        gate.blocked(exc.reason, now, self.now())
        if gate.should_log(now):
            log.error("delivery to cc-backend paused, every request is refused: %s; %d rows "
                      "wait and are retried with backoff (repeated every %.0f min while it "
                      "lasts)", exc.reason, self.store.outbox_depth(), LOG_EVERY / 60)  # fmt: skip

    def _channel_works(self, gate: Channel, name: str) -> None:
        since = gate.success()
        if since is not None:
            log.warning("%s channel works again after %.0f s; delivering what waited",
                        name, max(0.0, self.now() - since))  # fmt: skip

    def _warn_if_old(self, row: OutboxRow, answer: str) -> None:
        """One WARNING per row that has waited more than `WARN_AFTER` (issue 17 item 8)."""
        waited = self.now() - row.created
        if waited < WARN_AFTER or row.id in self._warned:
            return
        self._warned.add(row.id)
        log.warning("%s_job of job %s on %s has waited %.0f min (%d attempts); last answer: %s",
                    row.kind, row.key.job_id, row.key.cluster, waited / 60, row.attempts + 1,
                    answer)  # fmt: skip

    def channels(self) -> dict[str, ChannelState]:
        """Each channel's pause and problem, for ``status`` and the metrics."""
        now = trio.current_time()
        return {"rest": self.rest_gate.state(now), "nats": self.nats_gate.state(now)}

    def _rest_failed(self, row: OutboxRow, what: str, exc: BackendUnavailable) -> None:
        """A transient failure: keep the row, retry it with backoff; no answer or a gateway's
        error also pauses the REST channel."""
        status = exc.status
        self.stats.transient_failures += 1
        self.store.failed(row, f"{status or 'no answer'}: {exc.reason}")
        self._retry(row)
        self._warn_if_old(row, f"{status or 'no answer'}: {exc.reason}")
        if status is None or status in _GATEWAY:
            self.rest_gate.failure(trio.current_time())
        log.warning("%s failed (%s: %s); will retry", what, status or "no answer", exc.reason)

    async def _publish(self, row: OutboxRow) -> None:
        if self.publisher is None or self.nats_encode is None:
            # Queued while NATS was configured; it no longer is (config changed on restart).
            log.warning(
                "NATS is no longer configured: %s_job of job %s not published",
                row.kind,
                row.key.job_id,
            )
            self.store.nats_done(row, now=self.now())
            return
        try:
            await self.publisher.publish(self.nats_encode(row))
        except PublishError as exc:
            self.stats.nats_failures += 1
            self.store.failed(row, f"NATS: {exc}")
            self._retry(row)
            self._warn_if_old(row, f"NATS: {exc}")
            gate, now = self.nats_gate, trio.current_time()
            gate.blocked(str(exc), now, self.now())
            if gate.should_log(now):
                log.warning("NATS publish of %s_job of job %s failed: %s; the NATS channel "
                            "pauses and retries with backoff (repeated every %.0f min while "
                            "it lasts)", row.kind, row.key.job_id, exc, LOG_EVERY / 60)  # fmt: skip
            return
        self._channel_works(self.nats_gate, "NATS")
        self._forget(row)
        self.stats.nats_published += 1
        self.store.nats_done(row, now=self.now())

    def _retry(self, row: OutboxRow) -> None:
        n = self._failures.get(row.id, row.attempts) + 1
        self._failures[row.id] = n
        self._retry_at[row.id] = trio.current_time() + self.backoff.delay(n)

    def _forget(self, row: OutboxRow) -> None:
        self._retry_at.pop(row.id, None)
        self._failures.pop(row.id, None)


def _nats_only(row: OutboxRow) -> OutboxRow:
    """The row as it is once its POST is done (or REST is off): its NATS publish is left."""
    return dataclasses.replace(row, rest_pending=False, nats_pending=True, last_error=None)
