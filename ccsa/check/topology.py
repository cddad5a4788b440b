"""`check`'s rows about resources: Slurm's nodes against cc-backend's cluster topology.

:func:`topology_rows` (a producer, after the Slurm and cc-backend ones) fetches
``GET /api/clusters/`` and ``sinfo`` of every cluster the way the daemon does, then
:func:`resource_findings` (pure) decides, per cluster (docs/resources.md):

* every sinfo host in no ``subClusters[].nodes`` of its cluster: FAIL (cc-backend answers
  such a job start with 400 and drops the host's node state), listed as a hostlist;
* every ``gpuPciAddrs`` address that is not an accelerator id of the host's subcluster (case
  included, cc-backend compares strings): FAIL;
* a GPU node whose Slurm GPU count differs from the length of its id list: WARN;
* GPU nodes with neither ``gpuPciAddrs`` nor topology accelerators: FAIL (GPU jobs would be sent
  without accelerators);
* hosts whose topology and Slurm disagree on the node's shape: WARN (Slurm's shape is used);
* which source gives each host's hwthread ids: OK with topology, WARN without (Slurm's shape
  and ``siblingNumbering``).

Each failure says how to fix it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import httpx

from ccsa import topology
from ccsa.ccbackend.answers import error_text
from ccsa.ccbackend.pool import ssl_context
from ccsa.check.findings import Finding
from ccsa.errors import ConfigError, SlurmError
from ccsa.hostlist import compress
from ccsa.layout import SOURCE_MISMATCH, SOURCE_TOPOLOGY, Layouts, Numbering
from ccsa.nodestate import node_shapes
from ccsa.resources import ConvertOptions
from ccsa.slurm.sinfo import SinfoDoc

if TYPE_CHECKING:
    from ccsa.check.probes import CheckContext

__all__ = ["resource_findings", "topology_rows"]

PciList = Callable[[str], tuple[str, ...] | None]


def _hosts(hosts: Sequence[str]) -> str:
    text = compress(sorted(hosts))
    return text if len(text) <= 200 else text[:200] + "..."


def resource_findings(
    cluster: str,
    sinfo: SinfoDoc,
    topo: topology.ClusterTopology | None,
    pci_list: PciList,
    numbering: Numbering,
) -> list[Finding]:
    """The rows of one cluster (module docstring); ``topo`` None: cc-backend gave none."""
    layouts = Layouts(numbering)
    if topo is not None:
        layouts.set_topology({cluster: topo}, 0.0, "check")
    layouts.set_shapes(cluster, node_shapes(sinfo))
    hosts = sorted({h for g in sinfo.sinfo for h in g.nodes.nodes})
    out: list[Finding] = []
    if topo is not None:
        out += _membership(cluster, hosts, layouts)
    out += _gpu_findings(cluster, layouts, pci_list)
    out += _hwthread_findings(cluster, hosts, layouts, topo is not None)
    return out


def _membership(cluster: str, hosts: Sequence[str], layouts: Layouts) -> list[Finding]:
    name = f"{cluster}: subclusters"
    missing = [h for h in hosts if layouts.subcluster(cluster, h) is None]
    if missing:
        return [
            Finding(
                name,
                "fail",
                f"{len(missing)} sinfo hosts are in no subcluster of cc-backend's cluster "
                f"{cluster}: {_hosts(missing)} (cc-backend answers their job starts with 400 "
                "and drops their node state)",
                "add them to a subClusters[].nodes hostlist of the cluster's cluster.json in "
                "cc-backend's job archive, then restart cc-backend",
            )
        ]
    return [Finding(name, "ok", f"all {len(hosts)} sinfo hosts are in a subcluster")]


def _gpu_findings(cluster: str, layouts: Layouts, pci_list: PciList) -> list[Finding]:
    name = f"{cluster}: GPU ids"
    gpu_hosts = {h: s for h, s in layouts.shapes.items() if h[0] == cluster and s.gpus}
    if not gpu_hosts:
        return [Finding(name, "ok", "no GPU nodes")]
    out: list[Finding] = []
    none: list[str] = []
    foreign: dict[str, list[str]] = {}
    short: list[str] = []
    sources: dict[str, int] = {}
    for (_, host), shape in sorted(gpu_hosts.items()):
        pci = pci_list(host)
        ids = layouts.accelerator_ids(cluster, host)
        if pci is not None:
            sources["gpuPciAddrs"] = sources.get("gpuPciAddrs", 0) + 1
            if ids:
                for addr in pci:
                    if addr not in ids:
                        foreign.setdefault(addr, []).append(host)
            listed = len(pci)
        elif ids:
            sources["topology"] = sources.get("topology", 0) + 1
            listed = len(ids)
        else:
            none.append(host)
            continue
        if shape.gpus != listed and not (shape.mig and shape.gpus % listed == 0):
            short.append(f"{host} ({shape.gpus} GPUs, {listed} ids)")
    for addr, where in sorted(foreign.items()):
        sub = layouts.subcluster(cluster, where[0])
        known = ", ".join(sub.accelerators[:4]) if sub is not None else ""
        out.append(
            Finding(
                name,
                "fail",
                f"gpuPciAddrs address {addr} (hosts {_hosts(where)}) is not an accelerator id "
                f"of their cc-backend subcluster (it lists {known}...): their GPU metrics "
                "would select nothing",
                "write the ids exactly as cluster.json's topology.accelerators[].id has them "
                "(case included), or drop gpuPciAddrs to use them directly",
            )
        )
    if none:
        out.append(
            Finding(
                name,
                "fail",
                f"{len(none)} GPU nodes have neither a gpuPciAddrs entry nor accelerators in "
                f"cc-backend's topology: {_hosts(none)}: GPU jobs will be sent without "
                "accelerators",
                "list the GPUs in cluster.json (subClusters[].topology.accelerators, PCI ids "
                "in NVML order) or add a gpuPciAddrs entry for these hosts",
            )
        )
    if short:
        out.append(
            Finding(
                name,
                "warn",
                f"Slurm's GPU count differs from the id list on {', '.join(short[:5])}",
                "list one id per GPU, in NVML order (MIG: one per parent GPU)",
            )
        )
    if not out:
        used = ", ".join(f"{n} from {src}" for src, n in sorted(sources.items()))
        out.append(Finding(name, "ok", f"{len(gpu_hosts)} GPU nodes mapped ({used})"))
    return out


def _hwthread_findings(
    cluster: str, hosts: Sequence[str], layouts: Layouts, have_topology: bool
) -> list[Finding]:
    name = f"{cluster}: hwthread ids"
    by: dict[str, list[str]] = {}
    for host in hosts:
        by.setdefault(layouts.hwthread_source(cluster, host), []).append(host)
    out: list[Finding] = []
    differ = by.get(SOURCE_MISMATCH, [])
    if differ:
        first = layouts.mismatches[cluster, differ[0]]
        out.append(
            Finding(
                name,
                "warn",
                f"cc-backend's topology and Slurm disagree on {_hosts(differ)} ({differ[0]}: "
                f"{first}); Slurm's shape and siblingNumbering are used for them",
                "fix the subcluster's topology in cluster.json or the node's "
                "Sockets/CoresPerSocket/ThreadsPerCore in slurm.conf",
            )
        )
    rest = [h for h in hosts if h not in by.get(SOURCE_TOPOLOGY, []) and h not in differ]
    numbering = f"siblingNumbering {layouts.numbering}"
    if rest:
        why = "cc-backend gave no topology" if not have_topology else "no topology.core"
        out.append(
            Finding(
                name,
                "warn",
                f"{len(rest)} hosts ({_hosts(rest)}): {why}; hwthreads numbered from Slurm's "
                f"node shape with {numbering}",
                "give cc-backend's subclusters a topology.core (the hardware-thread ids of "
                "each core), or check that siblingNumbering matches these systems",
            )
        )
    topo_hosts = by.get(SOURCE_TOPOLOGY, [])
    if topo_hosts:
        out.append(Finding(name, "ok", f"{len(topo_hosts)} hosts from cc-backend's topology.core"))
    return out


async def _fetch(ctx: CheckContext) -> tuple[bytes | None, Finding | None]:
    cfg = ctx.cfg
    token = cfg.cc_rest_jwt.get()
    try:
        verify = ssl_context(False if cfg.cc_rest_insecure else cfg.cc_rest_ca_file or True)
    except ConfigError:
        return None, None  # already a row of the cc-backend producer
    headers = {"X-Auth-Token": token, "Accept": "application/json"}
    async with httpx.AsyncClient(
        base_url=cfg.cc_rest_url,
        headers=headers,
        timeout=cfg.cc_rest_timeout,
        verify=verify,
        trust_env=False,
    ) as client:
        try:
            resp = await client.get("/api/clusters/")
        except httpx.TransportError as exc:
            text = (str(exc) or type(exc).__name__).replace(token, "<jwt>")
            return None, Finding("cluster topology", "warn", f"not fetched: {text}")
    if resp.status_code != 200:
        return None, Finding(
            "cluster topology",
            "warn",
            f"GET /api/clusters/ answered {resp.status_code} ({error_text(resp.content)}): "
            "hwthreads from Slurm's node shapes, GPU ids from gpuPciAddrs only",
            "use a cc-backend with GET /api/clusters/ (v1.4+) and a token with the api role",
        )
    return resp.content, None


async def topology_rows(ctx: CheckContext) -> list[Finding]:
    """The producer (module docstring): needs Slurm's clusters; cc-backend's answer optional."""
    if not ctx.clusters:
        return [Finding("cluster topology", "skip", "not checked: no Slurm cluster (see above)")]
    body, row = await _fetch(ctx)
    out = [row] if row is not None else []
    clusters: dict[str, topology.ClusterTopology] = {}
    if body is not None:
        try:
            clusters, problems = topology.decode(body)
        except topology.TopologyError as exc:
            out.append(Finding("cluster topology", "warn", str(exc), "check cc-backend's log"))
        else:
            for p in problems:
                fix = "fix that subcluster in cc-backend's cluster.json"
                out.append(Finding("cluster topology", "warn", f"{p}: not used", fix))
    opts = ConvertOptions.from_config(ctx.cfg)
    for cluster in ctx.clusters:
        try:
            doc = await ctx.slurm.sinfo(cluster)
        except SlurmError as exc:
            out.append(Finding(f"{cluster}: resources", "skip", f"not checked: {exc}"))
            continue
        topo = clusters.get(cluster) if body is not None else None
        if body is not None and topo is None:
            out.append(
                Finding(
                    f"{cluster}: subclusters",
                    "fail",
                    f"cc-backend lists no cluster {cluster}",
                    "add its cluster.json to cc-backend's job archive",
                )
            )
        out += resource_findings(cluster, doc, topo, opts.pci_list, opts.layouts.numbering)
    return out
