"""Cluster configs for the stand-in: load ``*.cluster.json`` or build minimal ones.

cc-backend rejects unknown clusters and derives ``subCluster`` from ``resources[0].hostname``
with each sub-cluster's ``nodes`` hostlist (``pkg/archive/clusterConfig.go`` AssignSubCluster,
ccbackend.md §2.3). The membership test is hand-written here instead of expanding with
``ccsa.hostlist``: a sub-cluster such as ``f[0101-0188,...]`` or a generated ``n[0-999999]`` must
answer "is host X in it" without materialising every name, so each term is matched piecewise
(prefix, numeric range with its zero padding, suffix), the way cc-backend's own
``NodeList.Contains`` consumes the host name.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ccsa.errors import ConfigError

# One piece of a hostlist term: a literal string, or a set of numeric ranges (lo, hi, width).
_Range = tuple[int, int, int]
_Piece = str | tuple[_Range, ...]


def _split_top(expr: str) -> list[str]:
    """Split a hostlist expression on the commas outside brackets."""
    out: list[str] = []
    depth = 0
    start = 0
    for i, ch in enumerate(expr):
        if ch == "[":
            depth += 1
        elif ch == "]":
            depth -= 1
        elif ch == "," and depth == 0:
            out.append(expr[start:i])
            start = i + 1
    out.append(expr[start:])
    return [t.strip() for t in out if t.strip()]


def _parse_ranges(body: str, expr: str) -> tuple[_Range, ...]:
    ranges: list[_Range] = []
    for part in body.split(","):
        m = re.fullmatch(r"\s*(\d+)(?:-(\d+))?\s*", part)
        if m is None:
            raise ValueError(f"invalid range {part!r} in hostlist {expr!r}")
        lo_s, hi_s = m.group(1), m.group(2) or m.group(1)
        lo, hi = int(lo_s), int(hi_s)
        if hi < lo:
            raise ValueError(f"descending range {part!r} in hostlist {expr!r}")
        # Zero-padded ranges ("0101-0188") consume exactly that many digits; plain ones any.
        width = len(lo_s) if lo_s.startswith("0") and len(lo_s) > 1 else 0
        ranges.append((lo, hi, width))
    return tuple(ranges)


def _parse_term(term: str, expr: str) -> tuple[_Piece, ...]:
    pieces: list[_Piece] = []
    pos = 0
    while pos < len(term):
        lb = term.find("[", pos)
        if lb < 0:
            pieces.append(term[pos:])
            break
        if lb > pos:
            pieces.append(term[pos:lb])
        rb = term.find("]", lb)
        if rb < 0:
            raise ValueError(f"unbalanced '[' in hostlist {expr!r}")
        pieces.append(_parse_ranges(term[lb + 1 : rb], expr))
        pos = rb + 1
    if "]" in "".join(p for p in pieces if isinstance(p, str)):
        raise ValueError(f"unbalanced ']' in hostlist {expr!r}")
    return tuple(pieces)


def _match(pieces: Sequence[_Piece], host: str) -> bool:
    if not pieces:
        return host == ""
    head, rest = pieces[0], pieces[1:]
    if isinstance(head, str):
        return host.startswith(head) and _match(rest, host[len(head) :])
    digits = len(host) - len(host.lstrip("0123456789"))
    for lo, hi, width in head:
        lengths = [width] if width else range(1, digits + 1)
        for n in lengths:
            if n > digits or (not width and n > 1 and host[0] == "0"):
                continue  # an unpadded range never expands to "07"
            value = int(host[:n])
            if lo <= value <= hi and _match(rest, host[n:]):
                return True
    return False


@dataclass(frozen=True)
class HostList:
    """A compiled hostlist expression answering membership without expanding it."""

    expr: str
    terms: tuple[tuple[_Piece, ...], ...]

    @classmethod
    def parse(cls, expr: str) -> HostList:
        """Compile ``expr`` (``a[0121-0129],a[0221-0229],b7``); raises ValueError if malformed."""
        return cls(expr, tuple(_parse_term(t, expr) for t in _split_top(expr)))

    def __contains__(self, host: object) -> bool:
        return isinstance(host, str) and any(_match(t, host) for t in self.terms)


@dataclass(frozen=True)
class SubCluster:
    """A sub-cluster: its name and its ``nodes`` hostlist (``"*"`` = catch-all when first)."""

    name: str
    nodes: str
    hosts: HostList | None  # None for "*"
    accelerators: tuple[str, ...] = ()
    #: Every hardware-thread id of a node (``topology.node``, else the union of
    #: ``topology.core``); None when the config has neither (then nothing is checked).
    hwthreads: frozenset[int] | None = None

    def unknown_ids(self, resource: Mapping[str, object]) -> str | None:
        """The first hwthread or accelerator id of ``resource`` this topology lacks, described.

        cc-backend selects per-hwthread and per-accelerator series by these ids
        (``pkg/metricstore/scopequery.go``) and silently selects nothing for unknown ones; the
        stand-in refuses them so that tests notice.
        """
        hw = resource.get("hwthreads")
        if self.hwthreads is not None and isinstance(hw, list):
            for x in hw:
                if x not in self.hwthreads:
                    return f"hwthread {x}"
        acc = resource.get("accelerators")
        if self.accelerators and isinstance(acc, list):
            for a in acc:
                if a not in self.accelerators:
                    return f"accelerator {a}"
        return None


@dataclass(frozen=True)
class ClusterConfig:
    """One cluster as cc-backend loads it from the archive's ``cluster.json``."""

    name: str
    sub_clusters: tuple[SubCluster, ...]
    raw: Mapping[str, object] = field(default_factory=dict, compare=False)

    def sub_cluster(self, name: str) -> SubCluster | None:
        """The sub-cluster called ``name``, or None."""
        return next((s for s in self.sub_clusters if s.name == name), None)

    def assign(self, host: str) -> SubCluster | None:
        """AssignSubCluster: the first sub-cluster holding ``host``, else a first ``"*"``."""
        for sc in self.sub_clusters:
            if sc.hosts is not None and host in sc.hosts:
                return sc
        if self.sub_clusters and self.sub_clusters[0].hosts is None:
            return self.sub_clusters[0]
        return None


def _sub(
    name: str,
    nodes: str,
    accelerators: Iterable[str] = (),
    hwthreads: frozenset[int] | None = None,
) -> SubCluster:
    hosts = None if nodes.strip() == "*" else HostList.parse(nodes)
    return SubCluster(name, nodes, hosts, tuple(accelerators), hwthreads)


def _hwthreads(topo: Mapping[str, object]) -> frozenset[int] | None:
    ids: set[int] = set()
    node, core = topo.get("node"), topo.get("core")
    if isinstance(node, list):
        ids.update(x for x in node if isinstance(x, int))
    if isinstance(core, list):
        ids.update(x for c in core if isinstance(c, list) for x in c if isinstance(x, int))
    return frozenset(ids) if ids else None


def minimal(name: str, sub_clusters: Mapping[str, str] | None = None) -> ClusterConfig:
    """A generated cluster ``{sub-cluster: nodes hostlist}``; default ``{"main": "*"}``."""
    subs = sub_clusters or {"main": "*"}
    return ClusterConfig(name, tuple(_sub(n, nodes) for n, nodes in subs.items()))


def from_dict(data: object, source: str) -> ClusterConfig:
    """Build a ClusterConfig from decoded ``cluster.json``; ConfigError names source and key."""
    if not isinstance(data, dict):
        raise ConfigError(source, "a cluster config must be a JSON object")
    name = data.get("name")
    if not isinstance(name, str) or not name:
        raise ConfigError(source, "must be a non-empty string", "name")
    subs_raw = data.get("subClusters")
    if not isinstance(subs_raw, list) or not subs_raw:
        raise ConfigError(source, "must be a non-empty list", "subClusters")
    subs: list[SubCluster] = []
    for i, sc in enumerate(subs_raw):
        key = f"subClusters[{i}]"
        if not isinstance(sc, dict):
            raise ConfigError(source, "must be an object", key)
        sc_name, nodes = sc.get("name"), sc.get("nodes")
        if not isinstance(sc_name, str) or not sc_name:
            raise ConfigError(source, "must be a non-empty string", key + ".name")
        if not isinstance(nodes, str):
            raise ConfigError(source, "must be a hostlist string", key + ".nodes")
        topo = sc.get("topology")
        accs: list[str] = []
        hwthreads = None
        if isinstance(topo, dict):
            hwthreads = _hwthreads(topo)
            if isinstance(topo.get("accelerators"), list):
                accs = [str(a.get("id")) for a in topo["accelerators"] if isinstance(a, dict)]
        try:
            subs.append(_sub(sc_name, nodes, accs, hwthreads))
        except ValueError as exc:
            raise ConfigError(source, str(exc), key + ".nodes") from None
    return ClusterConfig(name, tuple(subs), data)


def load_file(path: str | Path) -> ClusterConfig:
    """Load one ``*.cluster.json`` (cc-backend's archive ``cluster.json`` format)."""
    p = Path(path)
    try:
        data = json.loads(p.read_bytes())
    except OSError as exc:
        raise ConfigError(str(p), f"cannot read: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise ConfigError(str(p), f"not valid JSON: {exc}") from None
    return from_dict(data, str(p))


def load(paths: Iterable[str | Path]) -> dict[str, ClusterConfig]:
    """Load files and directories (every ``*.cluster.json`` inside) into ``{name: config}``."""
    out: dict[str, ClusterConfig] = {}
    for path in paths:
        p = Path(path)
        files = sorted(p.glob("*.cluster.json")) if p.is_dir() else [p]
        if p.is_dir() and not files:
            raise ConfigError(str(p), "directory holds no *.cluster.json file")
        for f in files:
            cfg = load_file(f)
            if cfg.name in out:
                raise ConfigError(str(f), f"cluster {cfg.name!r} is defined twice", "name")
            out[cfg.name] = cfg
    return out
