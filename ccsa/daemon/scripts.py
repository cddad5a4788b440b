"""Job scripts fetched ahead: a hook event starts its new job's script fetch at once.

A hook lookup waits ``slurmQueryDelay`` before it asks sacct, because slurmdbd records a job a
little after slurmctld started it. slurmctld holds the batch script from submission on, though,
and where slurmdbd does not store scripts every new job costs one ``scontrol write batch_script``
(Slurm has no call for several jobs). `ScriptCache.prefetch` starts that call the moment the
job's hook event arrives, so it overlaps the delay instead of following it: the lookup then only
collects the answers (`take`), and the hook's start goes out after the lookup's three Slurm
calls instead of three plus one per new job. The poll takes from the same cache when it is the
first to build such a start.

Bounded: an entry lives until it is taken, at most `KEEP` seconds (trio clock), and the cache
holds at most `MAX_ENTRIES` entries and `MAX_BYTES` of scripts (the oldest go first). A fetch
that was dropped, never started or failed is simply done again by whoever needs the script.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass, field

import trio

from ccsa.daemon.stats import Stats

log = logging.getLogger(__name__)

#: An entry nobody took (the job's start was built without it) is dropped after this long.
KEEP = 3600.0
MAX_ENTRIES = 4096
MAX_BYTES = 64 * 1024 * 1024
#: Prefetches waiting for their turn; beyond this a prefetch is skipped (the lookup fetches).
MAX_QUEUED = 1024
#: How long `take` waits for fetches still running; a slower one (a hung ``scontrol``) is left
#: to the taker, so it cannot hold a lookup or a poll up for the command's whole timeout.
MAX_WAIT = 2.0

#: ``fetch(cluster, job_id)``: the script, or None when Slurm has none (``Slurm.batch_script``).
Fetch = Callable[[str, int], Awaitable[str | None]]
_Key = tuple[str, int]


@dataclass(slots=True)
class _Entry:
    born: float
    done: trio.Event = field(default_factory=trio.Event)
    started: bool = False
    answered: bool = False  # the fetch returned (script or None); False if it was cancelled
    script: str | None = None


class ScriptCache:
    """Scripts of new jobs, fetched when their hook event arrives. Run `run` in a nursery."""

    def __init__(
        self,
        fetch: Fetch,
        *,
        stats: Stats | None = None,
        keep: float = KEEP,
        max_entries: int = MAX_ENTRIES,
        max_bytes: int = MAX_BYTES,
        max_queued: int = MAX_QUEUED,
        max_wait: float = MAX_WAIT,
    ) -> None:
        self.fetch = fetch
        self.max_wait = max_wait
        self.stats = stats if stats is not None else Stats()
        self.keep = keep
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self._entries: dict[_Key, _Entry] = {}  # insertion order = age
        self._bytes = 0
        self._send, self._receive = trio.open_memory_channel[_Key](max_queued)

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def size_bytes(self) -> int:
        """Bytes of the scripts held (answered and not taken yet)."""
        return self._bytes

    def prefetch(self, cluster: str, job_id: int) -> bool:
        """Queue the fetch of one job's script (never blocks). False if already there or full."""
        key = (cluster, job_id)
        if key in self._entries:
            return False
        now = trio.current_time()
        self._expire(now)
        try:
            self._send.send_nowait(key)
        except trio.WouldBlock:
            log.debug("script prefetch queue full: job %d on %s fetched by its lookup", job_id,
                      cluster)  # fmt: skip
            return False
        self._entries[key] = _Entry(now)
        self.stats.scripts_prefetched += 1
        while len(self._entries) > self.max_entries:
            self._pop(next(iter(self._entries)))
        return True

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Start each queued fetch (the runner's limiter bounds the processes)."""
        async with trio.open_nursery() as nursery:
            task_status.started()
            async for key in self._receive:
                entry = self._entries.get(key)
                if entry is None or entry.started:
                    continue  # taken before it started (the taker fetches it), or dropped
                entry.started = True
                nursery.start_soon(self._fetch, key, entry)

    async def take(self, cluster: str, ids: Collection[int]) -> tuple[dict[int, str], list[int]]:
        """(scripts fetched ahead, ids to fetch now) for ``ids``; waits for fetches running,
        at most `max_wait` seconds (the ids of slower ones are returned to fetch now).

        An id whose fetch answered "no script" is in neither: asking again would get the same
        answer. The entries are removed: each script is handed out once.
        """
        found: dict[int, str] = {}
        rest: list[int] = []
        running: list[tuple[int, _Entry]] = []
        for job_id in ids:
            entry = self._pop((cluster, job_id))
            if entry is None or not entry.started:
                rest.append(job_id)
            else:
                running.append((job_id, entry))
        with trio.move_on_after(self.max_wait):
            for _, entry in running:
                await entry.done.wait()
        for job_id, entry in running:
            if not entry.answered:  # still running, or cancelled
                rest.append(job_id)
            elif entry.script:
                found[job_id] = entry.script
        self.stats.scripts_prefetch_hits += len(found)
        return found, rest

    async def _fetch(self, key: _Key, entry: _Entry) -> None:
        try:
            entry.script = await self.fetch(*key)
            entry.answered = True
        finally:
            entry.done.set()
        if entry.script and self._entries.get(key) is entry:
            self._bytes += len(entry.script)
            while self._bytes > self.max_bytes and self._entries:
                self._pop(next(iter(self._entries)))

    def _pop(self, key: _Key) -> _Entry | None:
        entry = self._entries.pop(key, None)
        if entry is not None and entry.done.is_set() and entry.script:
            self._bytes -= len(entry.script)
        return entry

    def _expire(self, now: float) -> None:
        while self._entries:
            key, entry = next(iter(self._entries.items()))
            if entry.born + self.keep > now:
                return
            self._pop(key)
