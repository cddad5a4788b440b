"""Decode+convert throughput and peak RSS for generated sacct / squeue dumps.

For each kind and size a dump is generated (``gen_dumps``, seeded) into a temporary directory,
then every measurement runs in a *fresh* subprocess so its peak RSS (``VmHWM``) belongs to that
measurement alone:

* ``ccsa``: ``ccsa.slurm.{sacct,squeue}.decode`` + ``ccsa.convert`` of every job (start body,
  stop body for finished sacct jobs; captured resources for squeue jobs);
* ``decode``: the ccsa decode alone (to show what conversion adds);
* ``json``: ``json.loads`` + walking the dicts for the same fields (the baseline).

Throughput = dump bytes / time of decode+convert (reading the file is not timed), on the wall
clock (``MB/s``) and on the process's CPU clock (``cpu MB/s``: on a shared, loaded machine the
wall clock also counts time the process waited for a core, the CPU clock does not). For ``ccsa``
the split is shown too: ``dec s`` (decode) and ``conv s`` (conversion, including the garbage
collections the decoded data triggers). These are the *first* decode of the process, whose
decoded objects land on fresh pages (a page fault each). ``steady MB/s`` / ``steady cpu MB/s``
are the median of 4 more runs of the same work in the same process, the previous result freed:
the daemon's case, a long-lived process decoding one poll's answer after another (not measured
for ``json``, which is slow and only a baseline). ``rss/dump`` is (peak RSS - RSS before
reading the dump) / dump size; the target is <= 2 (the dump itself, held while decoding, is 1
of it).

Run: ``python benchmarks/bench_decode.py [--sizes 10000 100000] [--kinds sacct squeue]``.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
#: Extra runs in the same process after the first (``steady`` columns); not for ``json``.
STEADY_REPEATS = 4


def _vm(key: str) -> int:
    """A ``/proc/self/status`` value in KiB (VmHWM = peak RSS, VmRSS = current)."""
    text = Path("/proc/self/status").read_text()
    match = re.search(rf"^{key}:\s+(\d+) kB", text, re.MULTILINE)
    return int(match.group(1)) if match else 0


def _child(method: str, kind: str, path: str) -> dict[str, Any]:
    if method in ("ccsa", "decode"):
        import re as _re

        from ccsa import convert as cv
        from ccsa.slurm import sacct, squeue

        opts = cv.ConvertOptions(
            gpu_pci_addrs=((_re.compile("^cn"), tuple(f"0000:{i:02x}:00.0" for i in range(8))),)
        )
    base = _vm("VmRSS")
    data = Path(path).read_bytes()

    def once() -> tuple[float, float, float, int]:
        """(wall s, CPU s, wall s of the decode alone, jobs) of one decode(+convert)."""
        t0 = time.perf_counter()
        c0 = time.process_time()
        n = 0
        decoded = t0
        if method == "decode":
            n = len((sacct if kind == "sacct" else squeue).decode(data, command=kind).jobs)
        elif method == "ccsa" and kind == "sacct":
            jobs = sacct.decode(data, command="sacct").jobs
            decoded = time.perf_counter()
            for acct in jobs:
                body = cv.start_body(acct, resources=None, opts=opts)
                if not isinstance(body, cv.Skip) and cv.is_finished(acct):
                    cv.stop_body(acct, body.start_time)
                n += 1
        elif method == "ccsa":
            qjobs = squeue.decode(data, command="squeue").jobs
            decoded = time.perf_counter()
            for job in qjobs:
                res = cv.capture_resources(job, opts)
                cv.start_body_from_queue(job, resources=res, opts=opts)
                n += 1
        elif kind == "sacct":
            for j in json.loads(data)["jobs"]:
                _ = (j["job_id"], j["state"]["current"][0], j["time"]["start"], j["time"]["end"])
                _ = (j["nodes"], j["user"], j["account"], j["time"]["limit"]["number"])
                _ = [t["count"] for t in j["tres"]["allocated"] if t["type"] in ("cpu", "gres")]
                n += 1
        else:
            for j in json.loads(data)["jobs"]:
                _ = (j["job_id"], j["job_state"][0], j["start_time"]["number"], j["gres_detail"])
                for a in (j.get("job_resources") or {}).get("nodes", {}).get("allocation", []):
                    _ = [
                        s["index"] * len(a["sockets"][0]["cores"]) + c["index"]
                        for s in a["sockets"]
                        for c in s["cores"]
                        if c["status"][0] == "ALLOCATED"
                    ]
                n += 1
        cpu = time.process_time() - c0
        end = time.perf_counter()
        return end - t0, cpu, decoded - t0, n

    seconds, cpu, dec, n = once()
    # The daemon decodes a poll's answer in a long-lived process whose heap is already warm:
    # repeat the same work (the previous result freed) and report the median as steady state.
    repeats = [once() for _ in range(STEADY_REPEATS if method != "json" else 0)]
    return {
        "seconds": seconds,
        "cpu_seconds": cpu,
        "decode_seconds": dec if method == "ccsa" else None,
        "convert_seconds": seconds - dec if method == "ccsa" else None,
        "steady_seconds": statistics.median(r[0] for r in repeats) if repeats else None,
        "steady_cpu_seconds": statistics.median(r[1] for r in repeats) if repeats else None,
        "jobs": n,
        "peak_kb": _vm("VmHWM"),
        "base_kb": base,
    }


def _measure(method: str, kind: str, path: Path) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--child", method, kind, str(path)],
        check=True,
        capture_output=True,
        text=True,
    )
    return dict(json.loads(proc.stdout))


def run(
    sizes: tuple[int, ...] = (10_000, 100_000),
    kinds: tuple[str, ...] = ("sacct", "squeue"),
    methods: tuple[str, ...] = ("ccsa", "decode", "json"),
    seed: int = 1,
) -> dict[str, Any]:
    """Measure every (kind, size, method); returns machine info and one row per measurement."""
    from benchmarks import gen_dumps
    from benchmarks.machine import machine_info, print_table

    rows = []
    with tempfile.TemporaryDirectory(prefix="ccsa-bench-") as tmp:
        for kind in kinds:
            for size in sizes:
                path = Path(tmp) / f"{kind}-{size}.json"
                nbytes = gen_dumps.write_dump(path, kind, size, seed)
                for method in methods:
                    m = _measure(method, kind, path)
                    peak_delta = (m["peak_kb"] - m["base_kb"]) * 1024
                    rows.append(
                        {
                            "kind": kind,
                            "jobs": size,
                            "method": method,
                            "dump_mb": nbytes / 1e6,
                            "seconds": m["seconds"],
                            "cpu_seconds": m["cpu_seconds"],
                            "decode_seconds": m["decode_seconds"],
                            "convert_seconds": m["convert_seconds"],
                            "mb_per_s": nbytes / 1e6 / m["seconds"],
                            "cpu_mb_per_s": nbytes / 1e6 / m["cpu_seconds"],
                            "steady_mb_per_s": (
                                nbytes / 1e6 / m["steady_seconds"] if m["steady_seconds"] else None
                            ),
                            "steady_cpu_mb_per_s": (
                                nbytes / 1e6 / m["steady_cpu_seconds"]
                                if m["steady_cpu_seconds"]
                                else None
                            ),
                            "peak_rss_mb": m["peak_kb"] * 1024 / 1e6,
                            "rss_over_dump": peak_delta / nbytes,
                        }
                    )
                path.unlink()
    command = f"python benchmarks/bench_decode.py --sizes {' '.join(map(str, sizes))}"
    headers = [
        "kind", "jobs", "method", "dump MB", "s", "dec s", "conv s", "MB/s", "cpu MB/s",
        "steady MB/s", "steady cpu MB/s", "peak RSS MB", "rss/dump",
    ]  # fmt: skip
    table = [
        [
            r["kind"],
            r["jobs"],
            r["method"],
            f"{r['dump_mb']:.1f}",
            f"{r['seconds']:.2f}",
            "" if r["decode_seconds"] is None else f"{r['decode_seconds']:.2f}",
            "" if r["convert_seconds"] is None else f"{r['convert_seconds']:.2f}",
            f"{r['mb_per_s']:.0f}",
            f"{r['cpu_mb_per_s']:.0f}",
            "" if r["steady_mb_per_s"] is None else f"{r['steady_mb_per_s']:.0f}",
            "" if r["steady_cpu_mb_per_s"] is None else f"{r['steady_cpu_mb_per_s']:.0f}",
            f"{r['peak_rss_mb']:.0f}",
            f"{r['rss_over_dump']:.2f}",
        ]
        for r in rows
    ]
    print_table("decode + convert (ccsa) vs json.loads + dict walk", headers, table, command)
    return {"machine": machine_info(), "command": command, "rows": rows}


def main() -> None:
    if len(sys.argv) == 5 and sys.argv[1] == "--child":
        print(json.dumps(_child(sys.argv[2], sys.argv[3], sys.argv[4])))
        return
    parser = argparse.ArgumentParser(description="decode+convert throughput and peak RSS")
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--kinds", nargs="+", default=["sacct", "squeue"])
    parser.add_argument("--json", action="store_true", help="print the raw result as JSON too")
    args = parser.parse_args()
    result = run(tuple(args.sizes), tuple(args.kinds))
    if args.json:
        print(json.dumps(result, indent=1))


if __name__ == "__main__":
    sys.path.insert(0, str(HERE.parent))  # run as a script: make `benchmarks` importable
    main()
