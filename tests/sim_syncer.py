"""A real Syncer and Store over a simulated Slurm cluster whose clock the test moves.

Shared by the sync tests that read the daemon's clock apart from Slurm's (`SimCluster.host_now`):
slurmdbd lag and clock skew (test_sync_dbdlag.py), requeued runs (test_sync_requeue.py).
"""

from __future__ import annotations

from ccsa import convert
from ccsa.daemon.store import Store
from ccsa.daemon.sync import Syncer
from ccsa.sim.slurm import SimCluster
from ccsa.slurm.commands import Slurm
from ccsa.slurm.runner import SlurmRunner

T0 = 1_700_000_000.0
OVERLAP = 60.0


def syncer(sim: SimCluster, store: Store) -> Syncer:
    """The daemon's Syncer over `sim`'s commands; the first poll starts at `T0`."""
    slurm = Slurm(SlurmRunner(str(sim.bin_dir), max_concurrent=4, timeout=30))
    return Syncer(
        slurm,
        store,
        convert.ConvertOptions(),
        now=lambda: sim.host_now,  # the daemon's clock (Slurm's may be skewed)
        rest=True,
        nats=False,
        overlap=OVERLAP,
        max_span=7 * 86400,
        initial_start=lambda: T0,
    )
