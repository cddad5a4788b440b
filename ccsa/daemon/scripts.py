"""Where a new job's batch script comes from (`ScriptSource`), and scripts fetched ahead.

`ScriptSource` is the one place that chooses, per cluster, among three sources, best first:

1. sacct's own ``script`` field, where slurmdbd stores scripts
   (``AccountingStoreFlags=job_script``): one ``sacct -j IDS --batch-script`` serves many jobs,
   and a hook lookup's own ``sacct -j`` carries them. Whether a cluster stores scripts is
   learned from the answers (`ScriptSource.note`): yes once any record carries one, no when
   started jobs came back without any.
2. the hook-event prefetch cache (`ScriptCache`, below).
3. ``scontrol write batch_script``, one call per job (Slurm has no call for several jobs).

Missing scripts never block a start: it goes out without ``jobScript``.

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
from collections.abc import Awaitable, Callable, Collection, Iterable, Sequence
from dataclasses import dataclass, field

import trio

from ccsa.convert import start_time
from ccsa.daemon.plan import of_cluster
from ccsa.daemon.stats import Stats
from ccsa.daemon.store import Store
from ccsa.errors import SlurmError
from ccsa.slurm.commands import Slurm
from ccsa.slurm.sacct import SacctJob

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


class ScriptSource:
    """Chooses where each new job's script comes from (module docstring), per cluster.

    Args:
        cache: scripts fetched when hook events arrived; None: fetched when needed.
    """

    def __init__(self, slurm: Slurm, store: Store, cache: ScriptCache | None = None) -> None:
        self.slurm = slurm
        self.store = store
        self.cache = cache
        #: Per cluster: does ``sacct --batch-script`` carry job scripts? Absent = not known yet.
        self.in_sacct: dict[str, bool] = {}

    def ask_sacct(self, cluster: str) -> bool:
        """Should a ``sacct -j`` of new jobs ask for ``--batch-script``? Yes unless learned that
        slurmdbd stores none."""
        return self.in_sacct.get(cluster) is not False

    def from_slurmctld_ahead(self, cluster: str, new_ids: Sequence[int]) -> list[int]:
        """Which of a lookup's new jobs get their script from slurmctld alongside its sacct
        call (one round of Slurm calls, not two): all, unless sacct is known to carry them."""
        return [] if self.in_sacct.get(cluster) else list(new_ids)

    def note(self, cluster: str, accts: Sequence[SacctJob]) -> None:
        """Learn from a ``sacct --batch-script`` answer whether slurmdbd stores job scripts."""
        if self.in_sacct.get(cluster):
            return
        if any(j.script for j in accts):
            self.in_sacct[cluster] = True
            log.info(
                "%s: slurmdbd stores job scripts: new jobs' scripts come from sacct "
                "--batch-script, one call for many jobs instead of one scontrol per job",
                cluster,
            )
        elif cluster not in self.in_sacct and any(_started(j) for j in accts):
            self.in_sacct[cluster] = False
            log.debug("%s: sacct --batch-script carries no scripts: using scontrol", cluster)

    def prefetch(self, cluster: str, job_id: int) -> None:
        """A hook event arrived: fetch the job's script now if its start will need one from
        slurmctld (a job not known yet, where sacct carries no scripts), so the lookup after
        ``slurmQueryDelay`` finds it ready."""
        if self.cache is None or self.in_sacct.get(cluster):
            return
        if self.store.known_jobs_for(cluster, [job_id]):
            return
        self.cache.prefetch(cluster, job_id)

    async def fetch(self, cluster: str, ids: Sequence[int], *, sacct: bool) -> dict[int, str]:
        """Scripts of ``ids`` (new starts whose own sacct record carried none). ``sacct``: try
        one ``sacct -j IDS --batch-script`` first (unless learned useless); the rest come from
        slurmctld. A job sacct lists without a script where slurmdbd stores them has none
        (srun, salloc) and costs no scontrol call."""
        found: dict[int, str] = {}
        rest: Iterable[int] = ids
        if sacct and ids and self.ask_sacct(cluster):
            found, listed = await self._from_sacct(cluster, ids)
            if self.in_sacct.get(cluster):
                rest = [i for i in ids if i not in listed]
        rest = list(rest)
        if rest:
            found = {**await self.from_slurmctld(cluster, rest), **found}
        return found

    async def from_slurmctld(self, cluster: str, ids: Sequence[int]) -> dict[int, str]:
        """Scripts from the prefetch cache, the others by ``scontrol write batch_script``."""
        scripts: dict[int, str] = {}
        rest: Sequence[int] = ids
        if self.cache is not None:
            scripts, rest = await self.cache.take(cluster, ids)
        if rest:
            scripts.update(await self.slurm.batch_scripts(cluster, rest))
        return scripts

    async def _from_sacct(
        self, cluster: str, ids: Sequence[int]
    ) -> tuple[dict[int, str], set[int]]:
        """(scripts, ids sacct listed) from one ``sacct -j IDS --batch-script``. When sacct
        fails, nothing: slurmctld is then asked instead."""
        try:
            doc = await self.slurm.sacct_jobs(cluster, ids, scripts=True)
        except SlurmError as exc:
            log.warning("%s: no job scripts from sacct for %d jobs: %s", cluster, len(ids), exc)
            return {}, set()
        jobs = of_cluster(doc.jobs, cluster)
        self.note(cluster, jobs)
        return {j.job_id: j.script for j in jobs if j.script}, {j.job_id for j in jobs}


def _started(acct: SacctJob) -> bool:
    return start_time(acct) is not None
