"""ScriptCache: job scripts fetched when the hook event arrives, taken once by the lookup.

The fetch is a stand-in for ``Slurm.batch_script`` that records its calls and answers after a
delay on the trio clock (`autojump_clock`); the Syncer test at the end uses the simulated
cluster's real ``scontrol``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import trio
import trio.testing

from ccsa.daemon.scripts import ScriptCache
from ccsa.daemon.store import Store
from ccsa.sim.slurm import JobSpec, Shape, SimCluster
from tests.test_sync import T0, make_syncer


class Slurmctld:
    """Answers ``write batch_script`` after `latency` seconds; None for ids without a script."""

    def __init__(self, scripts: dict[int, str], latency: float = 0.5) -> None:
        self.scripts = scripts
        self.latency = latency
        self.calls: list[tuple[str, int]] = []

    async def fetch(self, cluster: str, job_id: int) -> str | None:
        self.calls.append((cluster, job_id))
        await trio.sleep(self.latency)
        return self.scripts.get(job_id)


async def test_prefetched_script_is_taken_once_and_fetched_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    ctld = Slurmctld({1: "#!/bin/sh\necho one\n", 2: "#!/bin/sh\necho two\n"})
    cache = ScriptCache(ctld.fetch)
    async with trio.open_nursery() as nursery:
        await nursery.start(cache.run)
        assert cache.prefetch("c1", 1)
        assert cache.prefetch("c1", 2)
        assert cache.prefetch("c1", 3)
        assert not cache.prefetch("c1", 1)  # already there
        await trio.testing.wait_all_tasks_blocked()  # `run` has started the three fetches
        began = trio.current_time()
        found, rest = await cache.take("c1", [1, 2, 3, 4])  # waits for the running fetches
        assert trio.current_time() - began == pytest.approx(0.5)
        assert found == {1: "#!/bin/sh\necho one\n", 2: "#!/bin/sh\necho two\n"}
        assert rest == [4]  # 3 answered "no script": asking again would not help
        assert sorted(ctld.calls) == [("c1", 1), ("c1", 2), ("c1", 3)]
        again, rest = await cache.take("c1", [1])  # handed out once
        assert (again, rest) == ({}, [1])
        assert len(cache) == 0
        assert cache.size_bytes == 0
        assert (cache.stats.scripts_prefetched, cache.stats.scripts_prefetch_hits) == (3, 2)
        nursery.cancel_scope.cancel()


async def test_a_fetch_not_started_or_cancelled_is_left_to_the_taker(
    autojump_clock: trio.testing.MockClock,
) -> None:
    ctld = Slurmctld({1: "#!/bin/sh\n", 2: "#!/bin/sh\n"}, latency=10)
    cache = ScriptCache(ctld.fetch)
    cache.prefetch("c1", 1)  # `run` not started yet: queued only
    assert await cache.take("c1", [1]) == ({}, [1])
    async with trio.open_nursery() as nursery:
        await nursery.start(cache.run)
        await trio.sleep(1)
        assert ctld.calls == []  # the taken entry is not fetched any more
        cache.prefetch("c1", 2)
        await trio.sleep(1)
        assert ctld.calls == [("c1", 2)]
        nursery.cancel_scope.cancel()  # shutdown while the fetch runs
    assert await cache.take("c1", [2]) == ({}, [2])


async def test_a_hung_fetch_holds_the_taker_up_for_max_wait_only(
    autojump_clock: trio.testing.MockClock,
) -> None:
    ctld = Slurmctld({1: "#!/bin/sh\n"}, latency=3600)  # scontrol hangs until its timeout
    cache = ScriptCache(ctld.fetch, max_wait=2.0)
    async with trio.open_nursery() as nursery:
        await nursery.start(cache.run)
        cache.prefetch("c1", 1)
        await trio.sleep(0.5)
        began = trio.current_time()
        assert await cache.take("c1", [1]) == ({}, [1])  # the taker asks Slurm itself
        assert trio.current_time() - began == pytest.approx(2.0)
        nursery.cancel_scope.cancel()


async def test_bounded_by_entries_bytes_age_and_queue(
    autojump_clock: trio.testing.MockClock,
) -> None:
    ctld = Slurmctld(dict.fromkeys(range(10), f"#!/bin/sh\n{'x' * 100}\n"), latency=0.1)
    size = len(ctld.scripts[0])
    cache = ScriptCache(ctld.fetch, max_entries=3, max_bytes=2 * size, keep=60, max_queued=2)
    assert cache.prefetch("c1", 0)
    assert cache.prefetch("c1", 1)
    assert not cache.prefetch("c1", 2)  # queue full (run not started): left to the lookup
    async with trio.open_nursery() as nursery:
        await nursery.start(cache.run)
        for i in range(2, 5):
            assert cache.prefetch("c1", i)
            await trio.sleep(1)
        # the oldest went for the bytes: only answered scripts count
        assert cache.size_bytes == 2 * size
        assert len(cache) == 2
        found, rest = await cache.take("c1", range(5))
        assert sorted(found) == [3, 4]
        assert rest == [0, 1, 2]
        for i in (5, 6, 7, 8):
            assert cache.prefetch("c1", i)
            await trio.testing.wait_all_tasks_blocked()  # `run` starts its fetch
        assert len(cache) == 3  # at most max_entries: 5 went
        await trio.sleep(61)
        cache.prefetch("c1", 9)  # expires everything older than `keep`
        assert len(cache) == 1
        await trio.sleep(1)
        assert cache.size_bytes == size
        nursery.cancel_scope.cancel()


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store.open(tmp_path / "state.sqlite3")
    yield s
    s.close()


async def test_syncer_prefetches_only_new_jobs_and_the_lookup_uses_it(
    tmp_path: Path, store: Store
) -> None:
    sim = SimCluster.create(tmp_path / "sim", clusters=("c1",), start=T0)
    old = sim.submit(JobSpec(user="alice", shape=Shape(cpus_per_node=2), duration=600))
    sim.advance(30)
    syncer = make_syncer(sim, store)
    await syncer.tick("c1")  # `old` is started in the store
    fetched: list[int] = []

    async def fetch(cluster: str, job_id: int) -> str | None:
        fetched.append(job_id)
        return await syncer.slurm.batch_script(cluster, job_id)

    syncer.scripts.cache = cache = ScriptCache(fetch, stats=syncer.stats)
    new = sim.submit(JobSpec(user="bob", shape=Shape(cpus_per_node=2), duration=600))
    sim.advance(10)
    async with trio.open_nursery() as nursery:
        await nursery.start(cache.run)
        syncer.scripts.prefetch("c1", old)  # started already: needs no script
        syncer.scripts.prefetch("c1", new)
        result = await syncer.lookup("c1", [old, new])
        nursery.cancel_scope.cancel()
    assert fetched == [new]
    assert result.started == frozenset({old, new})
    scontrol = [c for c in sim.calls() if "batch_script" in str(c["argv"])]
    assert len(scontrol) == 2  # `old` by its poll, `new` once, ahead of the lookup
    assert syncer.stats.scripts_prefetch_hits == 1
    syncer.scripts.in_sacct["c1"] = True  # slurmdbd stores scripts: sacct has them
    syncer.scripts.prefetch("c1", new + 1)
    assert len(cache) == 0
