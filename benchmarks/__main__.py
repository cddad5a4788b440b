"""Run every benchmark (or those named), print their tables, write benchmarks/results/*.json.

Usage: ``python -m benchmarks [NAME ...]`` where NAME is a module ``benchmarks/bench_NAME.py``
exposing ``run() -> dict``. ``nox -s bench`` runs them all.
"""

from __future__ import annotations

import importlib
import json
import sys
import time
import traceback
from pathlib import Path

from benchmarks.machine import machine_info

HERE = Path(__file__).resolve().parent


def main(argv: list[str]) -> int:
    names = argv or sorted(p.stem.removeprefix("bench_") for p in HERE.glob("bench_*.py"))
    results: dict[str, object] = {"machine": machine_info(), "started": time.time()}
    failed = []
    for name in names:
        mod = importlib.import_module(f"benchmarks.bench_{name}")
        print(f"\n=== bench_{name} ===", flush=True)
        t0 = time.perf_counter()
        try:
            results[name] = mod.run()
        except Exception:
            traceback.print_exc()
            failed.append(name)
            results[name] = {"error": traceback.format_exc(limit=3)}
        print(f"(bench_{name}: {time.perf_counter() - t0:.1f} s)", flush=True)
    out = HERE / "results"
    out.mkdir(exist_ok=True)
    path = out / f"results-{time.strftime('%Y%m%dT%H%M%S')}.json"
    path.write_text(json.dumps(results, indent=1, default=str))
    print(f"\nresults written to {path}")
    if failed:
        print(f"FAILED: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
