"""cc-backend's cluster topology for the daemon: fetched, kept in the state DB, reported.

`TopologyKeeper` fetches ``GET /api/clusters/`` at start and every ``ccPollInterval``
(:meth:`TopologyKeeper.run`), decodes it with :mod:`ccsa.topology` and hands it to the
conversion's :class:`~ccsa.layout.Layouts`. The last answer that decoded is kept in the state DB
(table ``topology``, created here, one row) so that a restart while cc-backend is down still
converts with it. Nothing here is ever fatal: an unreachable cc-backend, a 404 (a cc-backend
without the route), an answer that does not decode or a part of one that cannot be used is one
log line (repeated only when it changes), and the hosts concerned fall back to Slurm's shape
(docs/resources.md). :meth:`TopologyKeeper.status` says which source each host uses, for
``status`` and the metrics.
"""

from __future__ import annotations

import logging
import sqlite3
from collections import Counter
from collections.abc import Awaitable, Callable

import trio

from ccsa import topology
from ccsa.daemon.snapshot import TopologyStatus
from ccsa.errors import BackendError
from ccsa.layout import Layouts

__all__ = ["TopologyKeeper"]

log = logging.getLogger(__name__)

_TABLE = """
CREATE TABLE IF NOT EXISTS topology (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    fetched REAL NOT NULL,        -- wall time of the fetch (epoch s)
    body BLOB NOT NULL            -- the GET /api/clusters/ answer as cc-backend sent it
)
"""

ORIGIN_BACKEND = "cc-backend"
ORIGIN_SAVED = "state DB"


class TopologyKeeper:
    """Fetch, keep and report cc-backend's topology (module docstring).

    ``fetch`` returns the answer's bytes or raises BackendError; ``db`` is the state DB's
    connection (None: nothing kept); ``now`` the wall clock; ``pci_list`` the gpuPciAddrs
    lookup (host -> list or None), for the GPU source counts.
    """

    def __init__(
        self,
        layouts: Layouts,
        fetch: Callable[[], Awaitable[bytes]],
        db: sqlite3.Connection | None,
        now: Callable[[], float],
        pci_list: Callable[[str], tuple[str, ...] | None] = lambda host: None,
    ) -> None:
        self.layouts = layouts
        self._fetch = fetch
        self._db = db
        self._now = now
        self._pci_list = pci_list
        self.last_error: str | None = None
        self.problems: list[str] = []
        if db is not None:
            with db:
                db.execute(_TABLE)

    def load_saved(self) -> bool:
        """Use the answer kept in the state DB, if any (at start, before the first fetch)."""
        if self._db is None:
            return False
        row = self._db.execute("SELECT fetched, body FROM topology WHERE id = 1").fetchone()
        if row is None:
            return False
        fetched, body = row
        if self._use(bytes(body), float(fetched), ORIGIN_SAVED):
            log.info(
                "cluster topology from the state DB (fetched %.0f s ago)", self._now() - fetched
            )
            return True
        return False

    async def refresh(self) -> bool:
        """Fetch once; True when a new answer is in use. Never raises for cc-backend's faults."""
        try:
            body = await self._fetch()
        except BackendError as exc:
            self._failed(f"{exc}; {self._fallback()}")
            return False
        when = self._now()
        if not self._use(body, when, ORIGIN_BACKEND):
            return False
        if self._db is not None:
            with self._db:
                self._db.execute(
                    "INSERT OR REPLACE INTO topology (id, fetched, body) VALUES (1, ?, ?)",
                    (when, body),
                )
        return True

    def _fallback(self) -> str:
        if self.layouts.topology_origin:
            return f"keeping the topology from {self.layouts.topology_origin}"
        return "hwthreads from Slurm's node shapes, GPUs from gpuPciAddrs only"

    def _failed(self, message: str) -> None:
        if message != self.last_error:
            log.warning("cluster topology: %s", message)
        self.last_error = message

    def _use(self, body: bytes, when: float, origin: str) -> bool:
        try:
            clusters, problems = topology.decode(body)
        except topology.TopologyError as exc:
            self._failed(f"{exc}; {self._fallback()}")
            return False
        texts = [str(p) for p in problems]
        for text in texts:
            if text not in self.problems:
                log.warning("%s; its hosts fall back to Slurm's shape", text)
        self.problems = texts
        self.last_error = None
        self.layouts.set_topology(clusters, when, origin)
        return True

    async def run(self, interval: float) -> None:
        """Refresh every ``interval`` seconds, forever (the first fetch is the caller's)."""
        while True:
            await trio.sleep(interval)
            await self.refresh()

    def status(self) -> TopologyStatus:
        """Where the topology came from and which source each host sinfo reported uses."""
        lay = self.layouts
        hosts: dict[str, Counter[str]] = {}
        gpus: dict[str, Counter[str]] = {}
        for (cluster, host), shape in lay.shapes.items():
            hosts.setdefault(cluster, Counter())[lay.hwthread_source(cluster, host)] += 1
            if shape.gpus:
                if self._pci_list(host) is not None:
                    source = "gpuPciAddrs"
                elif lay.accelerator_ids(cluster, host):
                    source = "topology"
                else:
                    source = "none"
                gpus.setdefault(cluster, Counter())[source] += 1
        return TopologyStatus(
            origin=lay.topology_origin,
            fetched_at=lay.topology_time or None,
            last_error=self.last_error,
            problems=list(self.problems),
            mismatches=[f"{c}/{h}: {why}" for (c, h), why in sorted(lay.mismatches.items())],
            hosts={c: dict(n) for c, n in sorted(hosts.items())},
            gpus={c: dict(n) for c, n in sorted(gpus.items())},
        )
