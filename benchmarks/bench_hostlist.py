"""Hostlist expansion/compression and gres_detail parsing speed (they run for every job).

``expand`` is measured uncached (cache cleared before each call: the first sight of a node list)
and cached (the same list seen again in the next poll), next to python-hostlist and ClusterShell
as references (both installed; neither reproduces Slurm's order, see ``ccsa.hostlist``).

Run: ``python -m benchmarks hostlist``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import partial
from typing import Any

from benchmarks.machine import print_table
from ccsa import gres, hostlist

CASES = {
    "small": "cn[1,3-4]",
    "typical": "gpu[001-008],cn[0101-0164,0201-0232]",
    "large": "n[0001-4096]",
}
DETAIL = "gpu:h100:2(IDX:0-1),gpu:h200:4(IDX:2-5)"


def _per_call(fn: Callable[[], object], budget: float = 0.3) -> float:
    """Seconds per call, from as many calls as fit into ``budget`` (at least 3)."""
    n, start = 0, time.perf_counter()
    while True:
        fn()
        n += 1
        elapsed = time.perf_counter() - start
        if n >= 3 and elapsed >= budget:
            return elapsed / n


def _uncached(expr: str) -> Callable[[], object]:
    def call() -> object:
        hostlist._expand_cached.cache_clear()
        return hostlist.expand(expr)

    return call


def _clustershell(nodeset: Callable[[str], Any], expr: str) -> list[str]:
    return list(nodeset(expr))


def _gres_uncached() -> object:
    gres._parse_cached.cache_clear()
    return gres.gpu_indices(DETAIL)


def run() -> dict[str, Any]:
    import hostlist as python_hostlist  # type: ignore[import-untyped]
    from ClusterShell.NodeSet import NodeSet  # type: ignore[import-untyped]

    rows: list[list[Any]] = []
    results: dict[str, Any] = {}
    for name, expr in CASES.items():
        hosts = hostlist.expand(expr)
        timings = {
            "ccsa expand (uncached)": _per_call(_uncached(expr)),
            "ccsa expand (cached)": _per_call(partial(hostlist.expand, expr)),
            "ccsa compress": _per_call(partial(hostlist.compress, hosts)),
            "python-hostlist expand": _per_call(partial(python_hostlist.expand_hostlist, expr)),
            "ClusterShell expand": _per_call(partial(_clustershell, NodeSet, expr)),
        }
        results[name] = {"expression": expr, "hosts": len(hosts), **timings}
        for what, seconds in timings.items():
            rows.append([name, len(hosts), what, f"{seconds * 1e6:,.1f}"])
    for what, fn in (
        ("gpu_indices (uncached)", _gres_uncached),
        ("gpu_indices (cached)", partial(gres.gpu_indices, DETAIL)),
    ):
        seconds = _per_call(fn)
        results[what] = seconds
        rows.append([DETAIL, "-", what, f"{seconds * 1e6:,.2f}"])
    print_table(
        "hostlist / gres parsing",
        ["case", "hosts", "operation", "µs per call"],
        rows,
        "python -m benchmarks hostlist",
    )
    return results


if __name__ == "__main__":
    run()
