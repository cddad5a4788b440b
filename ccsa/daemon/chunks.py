"""Cut a poll's decision into chunks of new starts, so a backlog reaches cc-backend soon (pure).

Contract: `split(decision, size)` returns decisions that together hold exactly what `decision`
holds. Every chunk but the last has `size` new starts (the first one fewer) and the stops of
those same jobs (a stop is stored in the transaction of its start); the last chunk also holds
everything else: the stops of runs started earlier, the extra actions (requeue stops, resource
updates, stale marks), the stale check's lookups and the unseen ids. `store_in_chunks` builds
and stores chunk after chunk, each in its own transaction that wakes the delivery, so the first
starts are delivered (and the next chunk's job scripts fetched meanwhile) while the rest is
still being built; only the last chunk's transaction moves the watermark, so it still moves
only past what is queued (issue #19).
"""

from __future__ import annotations

import itertools
from collections.abc import Awaitable, Callable, Sequence

from ccsa.daemon.plan import Action, Decision, Wait
from ccsa.daemon.store import ApplyResult

__all__ = ["CHUNK_JOBS", "FIRST_CHUNK_JOBS", "split", "store_in_chunks"]

#: New starts per chunk: a few hundred jobs' scripts take a second or two to fetch.
CHUNK_JOBS = 300
#: New starts of the first chunk: smaller, so the first starts go out sooner.
FIRST_CHUNK_JOBS = 100


def split(decision: Decision, size: int | None = None, first: int | None = None) -> list[Decision]:
    """The chunks of `decision` (see the module docstring); one chunk when it is small.
    `size`: new starts per chunk (default `CHUNK_JOBS`), `first`: in the first one (default
    `FIRST_CHUNK_JOBS`, at most `size`)."""
    size = CHUNK_JOBS if size is None else size
    first = min(size, FIRST_CHUNK_JOBS if first is None else first)
    if size < 1 or first < 1:
        raise ValueError(f"chunk sizes must be >= 1, got {first} and {size}")
    n = len(decision.starts)
    bounds = [0]
    while n - bounds[-1] > (first if len(bounds) == 1 else size):
        bounds.append(bounds[-1] + (first if len(bounds) == 1 else size))
    if len(bounds) == 1:
        return [decision]
    chunks: list[Decision] = []
    stops_of: dict[int, list[int]] = {}
    for index, (acct, _start) in enumerate(decision.stops):
        stops_of.setdefault(acct.job_id, []).append(index)
    taken: set[int] = set()
    for lo, hi in itertools.pairwise(bounds):
        starts = decision.starts[lo:hi]
        mine = [i for acct, _ in starts for i in stops_of.get(acct.job_id, ())]
        taken.update(mine)
        stops = [decision.stops[i] for i in sorted(mine)]
        chunk = Decision(decision.cluster, starts=starts, stops=stops)
        chunk.stop_keys = {(acct.job_id, start) for acct, start in stops}
        chunks.append(chunk)
    last_stops = [s for i, s in enumerate(decision.stops) if i not in taken]
    chunks.append(
        Decision(
            decision.cluster,
            starts=decision.starts[bounds[-1] :],
            stops=last_stops,
            extra=decision.extra,
            lookup=decision.lookup,
            stop_keys={(acct.job_id, start) for acct, start in last_stops},
            unseen=decision.unseen,
        )
    )
    return chunks


async def store_in_chunks(
    parts: list[Decision],
    waits: Sequence[Wait],
    build: Callable[[Decision], Awaitable[list[Action]]],
    apply: Callable[..., ApplyResult],
    watermark: float,
) -> ApplyResult:
    """Build (metadata fetch) and store the chunks of `split` one by one, taking each out of
    `parts` (its views are freed once stored); `waits` and the watermark go with the last.
    ``apply(actions, watermark=...)`` is one transaction."""
    applied = ApplyResult()
    while parts:
        part = parts.pop(0)
        final = not parts
        actions = await build(part)
        del part
        if final:
            actions += waits
        applied += apply(actions, watermark=watermark if final else None)
    return applied
