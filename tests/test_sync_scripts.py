"""Where slurmdbd stores job scripts, new jobs' scripts come from ONE ``sacct --batch-script``.

Without stored scripts every new job still in slurmctld costs one ``scontrol write
batch_script``. Where slurmdbd stores them (AccountingStoreFlags=job_script) the poll asks one
``sacct -j IDS --batch-script`` for all its new starts, and a hook lookup asks its ``sacct -j``
with ``--batch-script`` (issue #6: "<= 0.05 Slurm subprocesses per job when slurmdbd stores job
scripts"; the long soak found one scontrol per job on the hook path). Which case a cluster is
in is learned from the answers; scripts arrive either way.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest

from ccsa.ccbackend.models import StartJob
from ccsa.daemon.store import Store
from ccsa.sim.slurm import JobSpec, Shape, SimCluster
from tests.test_sync import T0, make_syncer


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store.open(tmp_path / "state.sqlite3")
    yield s
    s.close()


def _calls(sim: SimCluster, command: str, word: str) -> int:
    return sum(
        1 for c in sim.calls() if c["command"] == command and word in str(c["argv"]).split("'")
    )


def _start_scripts(store: Store) -> dict[int, str]:
    out: dict[int, str] = {}
    for r in store.outbox_rows():
        if r.kind == "start":
            body = msgspec.json.decode(r.body, type=StartJob)
            out[r.key.job_id] = body.meta_data.get("jobScript", "")
    return out


@pytest.mark.parametrize("stored", [True, False])
async def test_scripts_from_one_sacct_where_slurmdbd_stores_them(
    tmp_path: Path, store: Store, stored: bool
) -> None:
    sim = SimCluster.create(tmp_path / "sim", clusters=("c1",), start=T0, store_scripts=stored)
    polled = [
        sim.submit(JobSpec(user="alice", shape=Shape(cpus_per_node=2), duration=600))
        for _ in range(4)
    ]
    sim.advance(30)
    syncer = make_syncer(sim, store)
    await syncer.tick("c1")  # the poll: 4 new starts
    assert syncer.scripts.in_sacct["c1"] is stored
    poll_scontrol = _calls(sim, "scontrol", "batch_script")
    poll_sacct_b = _calls(sim, "sacct", "--batch-script")
    assert (poll_scontrol, poll_sacct_b) == ((0, 1) if stored else (len(polled), 1))

    hooked = [
        sim.submit(JobSpec(user="bob", shape=Shape(cpus_per_node=2), duration=600))
        for _ in range(3)
    ]
    sim.advance(10)
    result = await syncer.lookup("c1", hooked)  # what a burst of prolog events does
    assert result.started == frozenset(hooked)
    hook_scontrol = _calls(sim, "scontrol", "batch_script") - poll_scontrol
    hook_sacct_b = _calls(sim, "sacct", "--batch-script") - poll_sacct_b
    # stored: the lookup's own sacct -j carries them; not stored: learned, sacct not asked again
    assert (hook_scontrol, hook_sacct_b) == ((0, 1) if stored else (len(hooked), 0))

    scripts = _start_scripts(store)
    truth = {j.job_id: j.script for j in sim.state.jobs}
    for jid in [*polled, *hooked]:
        assert scripts[jid] == truth[jid]
        assert scripts[jid].startswith("#!")
