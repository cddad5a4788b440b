"""The demo's surroundings (pure): its cluster, job mix and run times, GPU maps, daemon config.

`shape_workload` shortens a generated workload so a demo of a minute finishes most jobs;
`gpu_pci_map` gives each simulated GPU node group PCI addresses (``gpuPciAddrs``), `gpu_types`
the GPU type of each index; `daemon_config` writes the config file the demo's daemon runs with.
The soak and the resource tests reuse the mix and the GPU map.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec

if TYPE_CHECKING:
    from ccsa.sim.ccbackend.clusters import ClusterConfig
    from ccsa.sim.slurm import ClusterSpec, JobSpec

CLUSTER = "demo"
#: Job kinds of the demo's mix (``ccsa.sim.slurm.schedule.DEFAULT_MIX`` without ``requeue``: a
#: requeued job legitimately starts twice in cc-backend, which the exactly-once check would flag).
DEMO_MIX: dict[str, float] = {
    "small": 26,
    "gpu": 16,
    "multinode": 8,
    "multitype": 6,
    "array": 6,
    "het": 3,
    "exclusive": 4,
    "user_shared": 3,
    "cancel_pending": 3,
    # issue 18: run, end as REQUEUED / PREEMPTED, run again (cc-backend keeps the first run and
    # refuses the second with 422 within 86,400 s; the verdict counts that as refused)
    "requeue": 2,
    "preempt": 2,
}
POLL_INTERVAL = 5.0
QUERY_DELAY = 1.0
#: GPU PCI addresses per node group prefix suffix (index = Slurm GPU index on the node).
PCI_A100 = ("0000:07:00.0", "0000:0b:00.0", "0000:48:00.0", "0000:4c:00.0")
PCI_HX = (
    "0000:18:00.0",
    "0000:2a:00.0",
    "0000:3a:00.0",
    "0000:5d:00.0",
    "0000:9a:00.0",
    "0000:ab:00.0",
)


def scale_for(duration: float) -> float:
    """Job run times are scaled so that most jobs of a demo of ``duration`` seconds finish."""
    return min(1.0, max(0.02, duration / 400.0))


#: Shortest run time in the demo: a real job lives long enough for the Prolog hook's look-up
#: (slurmQueryDelay + a Slurm call) to see it running.
MIN_RUN = 8.0


def shape_workload(specs: Sequence[JobSpec], scale: float) -> list[JobSpec]:
    """Shorten run times (and the cancel-while-pending delay) of a generated workload: the
    generator's 30 s minimum becomes ``MIN_RUN``, longer runs are scaled by ``scale``."""
    out = []
    for js in specs:
        cancel = js.cancel_pending_after
        requeue, preempt = js.requeue_after, js.preempt_after
        out.append(
            msgspec.structs.replace(
                js,
                duration=MIN_RUN + max(0.0, js.duration - 30.0) * scale,
                cancel_pending_after=None if cancel is None else max(2.0, cancel * scale),
                requeue_after=None if requeue is None else max(2.0, requeue * scale),
                preempt_after=None if preempt is None else max(2.0, preempt * scale),
            )
        )
    return out


def gpu_pci_map(spec: ClusterSpec) -> dict[str, list[str]]:
    """``gpuPciAddrs`` for the simulated GPU node groups (anchored regexes, as upstream uses)."""
    out: dict[str, list[str]] = {}
    for group in spec.groups:
        count = sum(g.count for g in group.gpus)
        if not count:
            continue
        pool = PCI_HX if len(group.gpus) > 1 else PCI_A100
        addrs = list(pool[:count]) + [f"0000:{0xC0 + i:02x}:00.0" for i in range(count - len(pool))]
        out[rf"^{group.prefix}\d+$"] = addrs
    return out


def standin_cluster(spec: ClusterSpec, pci: Mapping[str, list[str]]) -> ClusterConfig:
    """The stand-in's cluster.json for the simulated cluster: one subcluster per node group
    with its real topology (SMT threads numbered as Linux on x86 does) and the group's GPU ids,
    so the stand-in refuses any hwthread or GPU id that cc-backend could not match."""
    from ccsa.hostlist import compress
    from ccsa.sim.ccbackend import topologies

    groups = [
        (g.prefix, compress(g.names()), g.sockets, g.cores, g.threads,
         pci.get(rf"^{g.prefix}\d+$", []))
        for g in spec.groups
    ]  # fmt: skip
    return topologies.config(topologies.for_nodes(spec.name, groups))


def gpu_types(spec: ClusterSpec) -> dict[str, list[str]]:
    """Node-name prefix -> GPU type of each GPU index on such a node."""
    out: dict[str, list[str]] = {}
    for group in spec.groups:
        types: list[str] = []
        for g in group.gpus:
            types.extend([g.type] * g.count)
        if types:
            out[group.prefix] = types
    return out


def daemon_config(
    tmp: Path,
    *,
    url: str,
    token: str,
    bin_dir: Path,
    pci: Mapping[str, list[str]],
    nats_port: int | None,
    subject: str = "ccsa-demo",
) -> dict[str, Any]:
    """The daemon's config file (upstream camelCase keys) for the demo's surroundings."""
    cfg: dict[str, Any] = {
        "ccRestUrl": url,
        "ccRestJwt": token,
        "pidFilePath": str(tmp / "run" / "daemon.pid"),
        "prepSockListenPath": str(tmp / "daemon.sock"),
        "prepSockConnectPath": str(tmp / "daemon.sock"),
        "lastRunPath": str(tmp / "lib" / "lastrun"),
        "stateDbPath": str(tmp / "lib" / "state.sqlite3"),
        "slurmBinDir": str(bin_dir),
        "slurmPollInterval": POLL_INTERVAL,
        "slurmQueryDelay": QUERY_DELAY,
        "slurmQueryMaxSpan": 3600,
        "ccPollInterval": 600,
        "gpuPciAddrs": dict(pci),
    }
    if nats_port is not None:
        cfg |= {
            "natsServer": "127.0.0.1",
            "natsPort": nats_port,
            "natsSubject": subject,
            "ccRestSubmitJobs": False,
        }
    return cfg
