"""Render the node and accounting documents: ``sinfo --json`` groups and ``sacctmgr`` clusters
and users (pure), in the shapes of data_parser v0.0.41-v0.0.44 (slurm-json.md §9, §10).

There are no real sinfo/sacctmgr-clusters captures in the fixtures; the shapes follow Slurm's
data_parser sources as described in slurm-json.md, checked against the real 24.11.5 test bed
(docs/real-slurm.md): each ``sinfo[]`` group carries ``resource_spec`` (the node's CoreSpec/
MemSpec limits; none here), and the partition object has no ``flags`` (a partition's flags are
not part of data_parser's PARTITION_INFO in any version; v0.0.43+ add ``topology``).
"""

from __future__ import annotations

from collections.abc import Sequence

from ccsa.sim.slurm.model import ClusterSpec, NodeGroup, State
from ccsa.sim.slurm.render import NV_INF, NV_UNSET, Ctx, Doc, View, compress, dp_num, nv, ranges_str

# --------------------------------------------------------------------------------------------
# sinfo


def sinfo(ctx: Ctx, spec: ClusterSpec, running: Sequence[View]) -> list[Doc]:
    """``sinfo --json`` groups: per partition, node state, node config and ``gres_used``."""
    used_cores: dict[str, int] = {}
    used_gpus: dict[str, set[int]] = {}
    used_mem: dict[str, int] = {}
    for v in running:
        if v.run is None:
            continue
        for a in v.run.allocs:
            used_cores[a.node] = used_cores.get(a.node, 0) + len(a.cores)
            used_gpus.setdefault(a.node, set()).update(a.gpus)
            used_mem[a.node] = used_mem.get(a.node, 0) + v.job.shape.mem_per_node
    any_gpus = any(g.gpus for g in spec.groups)
    by_prefix = {g.prefix: g for g in spec.groups}
    out: list[Doc] = []
    for p in spec.partitions:
        pgroups = [by_prefix[x] for x in p.groups]
        pnodes = [n for g in pgroups for n in g.names()]
        total_cpus = sum(g.ncores * g.threads * g.count for g in pgroups)
        pdoc = _partition_doc(ctx, spec, p.name, p.time_limit, pnodes, total_cpus)
        buckets: dict[tuple[str, str, str], list[str]] = {}
        for g in pgroups:
            for name in g.names():
                uc = used_cores.get(name, 0)
                st = "IDLE" if uc == 0 else ("ALLOCATED" if uc >= g.ncores else "MIXED")
                buckets.setdefault(
                    (st, g.prefix, _gres_used(g, used_gpus.get(name, set()), any_gpus)), []
                ).append(name)
        for (st, prefix, gused), names in buckets.items():
            g = by_prefix[prefix]
            cpn = g.ncores * g.threads
            alloc = sum(used_cores.get(n, 0) * g.threads for n in names)
            group: Doc = {
                "port": 6818,
                "node": {"state": [st]},
                "nodes": {
                    "allocated": len(names) if st in ("ALLOCATED", "MIXED") else 0,
                    "idle": len(names) if st == "IDLE" else 0,
                    "other": 0,
                    "total": len(names),
                    "hostnames": list(names),
                    "addresses": list(names),
                    "nodes": list(names),
                },
                "cpus": {
                    "allocated": alloc,
                    "idle": cpn * len(names) - alloc,
                    "other": 0,
                    "total": cpn * len(names),
                    "minimum": cpn,
                    "maximum": cpn,
                    "load": {"minimum": 0, "maximum": 0},
                    "per_node": {"max": NV_UNSET},
                },
                "sockets": {"minimum": g.sockets, "maximum": g.sockets},
                "cores": {"minimum": g.cores, "maximum": g.cores},
                "threads": {"minimum": g.threads, "maximum": g.threads},
                "disk": {"minimum": 0, "maximum": 0},
                "memory": {
                    "minimum": g.memory,
                    "maximum": g.memory,
                    "free": {"minimum": nv(g.memory // 2), "maximum": nv(g.memory)},
                    "allocated": used_mem.get(names[-1], 0),
                },
                "weight": {"minimum": 1, "maximum": 1},
                "features": {"total": "", "active": ""},
                "gres": {"total": g.gres(), "used": gused},
                "cluster": "",
                "comment": "",
                "extra": "",
                "reason": {"description": "", "time": 0, "user": ""},
                "reservation": "",
                # seen on the real 24.11.5 (v0.0.42); not known to exist in v0.0.41
                **({"resource_spec": {"cpus": "", "memory": 0}} if ctx.n >= 42 else {}),
                "partition": pdoc,
            }
            out.append(group)
    return out


def _gres_used(g: NodeGroup, used: set[int], any_gpus: bool) -> str:
    if not g.gpus:
        return "gpu:0" if any_gpus else ""
    if len(g.gpus) == 1 and not g.gpus[0].type:
        return f"gpu:{len(used)}"
    parts = []
    off = 0
    for gs in g.gpus:
        mine = [i for i in used if off <= i < off + gs.count]
        off += gs.count
        parts.append(f"gpu:{gs.type}:{len(mine)}(IDX:{ranges_str(mine) if mine else 'N/A'})")
    return ",".join(parts)


def _partition_doc(
    ctx: Ctx, spec: ClusterSpec, name: str, limit: int, nodes: list[str], cpus: int
) -> Doc:
    doc: Doc = {
        "nodes": {"allowed_allocation": "", "configured": compress(nodes), "total": len(nodes)},
        "accounts": {"allowed": "", "deny": ""},
        "groups": {"allowed": ""},
        "qos": {"allowed": "", "deny": "", "assigned": ""},
        "alternate": "",
        "tres": {
            "billing_weights": "",
            "configured": f"cpu={cpus},node={len(nodes)},billing={cpus}",
        },
        "cluster": spec.name,
        "select_type": [],
        "cpus": {"task_binding": 0, "total": cpus},
        "defaults": {
            "memory_per_cpu": 0,
            "partition_memory_per_cpu": NV_UNSET,
            "partition_memory_per_node": NV_UNSET,
            "time": NV_UNSET,
            "job": "",
        },
        "grace_time": 0,
        "maximums": {
            "cpus_per_node": NV_INF,
            "cpus_per_socket": NV_INF,
            "memory_per_cpu": 0,
            "partition_memory_per_cpu": NV_UNSET,
            "partition_memory_per_node": NV_UNSET,
            "nodes": NV_INF,
            "shares": 1,
            "oversubscribe": {"jobs": 1, "flags": []},
            "time": nv(limit),
            "over_time_limit": NV_UNSET,
        },
        "minimums": {"nodes": 0},
        "name": name,
        "node_sets": "",
        "priority": {"job_factor": 1, "tier": 1},
        "timeouts": {"resume": NV_UNSET, "suspend": NV_UNSET},
        "partition": {"state": ["UP"]},
        "suspend_time": NV_UNSET,
    }
    if ctx.n >= 43:
        doc["topology"] = ""
    return doc


# --------------------------------------------------------------------------------------------
# sacctmgr


def sacctmgr_clusters(state: State) -> list[Doc]:
    out = []
    for c in state.clusters:
        nodes = [n for g in c.groups for n in g.names()]
        cpus = sum(g.ncores * g.threads * g.count for g in c.groups)
        mem = sum(g.memory * g.count for g in c.groups)
        out.append(
            {
                "controller": {"host": f"{c.name}-ctl", "port": 6817},
                "flags": [],
                "name": c.name,
                "nodes": compress(nodes),
                "select_plugin": "",
                "associations": {
                    "root": {
                        "account": "root",
                        "cluster": c.name,
                        "partition": "",
                        "user": "",
                        "id": 1,
                    }
                },
                "rpc_version": 10752,
                "tres": [
                    {"type": "cpu", "name": "", "id": 1, "count": cpus},
                    {"type": "mem", "name": "", "id": 2, "count": mem},
                    {"type": "energy", "name": "", "id": 3, "count": 0},
                    {"type": "node", "name": "", "id": 4, "count": len(nodes)},
                    {"type": "billing", "name": "", "id": 5, "count": cpus},
                ],
            }
        )
    return out


def sacctmgr_users(state: State, dp: str, names: Sequence[str]) -> list[Doc]:
    out: list[Doc] = []
    seen: set[str] = set()
    for c in state.clusters:
        for u in c.users:
            if (names and u.name not in names) or u.name in seen:
                continue
            seen.add(u.name)
            default: Doc = {"account": u.account, "wckey": ""}
            if dp_num(dp) >= 44:
                default["qos"] = 0
            out.append(
                {
                    "administrator_level": [u.admin_level],
                    "associations": [],
                    "coordinators": [],
                    "default": default,
                    "flags": ["NONE"],
                    "name": u.name,
                    "old_name": "",
                    "wckeys": [],
                }
            )
    return sorted(out, key=lambda d: str(d["name"]))
