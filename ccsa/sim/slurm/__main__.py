"""``python -m ccsa.sim.slurm``: create, drive and inspect a simulated Slurm cluster."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import msgspec

from ccsa.sim.slurm import faults

HELP = """\
A simulated Slurm cluster whose sacct, squeue, scontrol, sinfo and sacctmgr are real executables
answering from a seeded, deterministic job schedule kept in DIR.

  python -m ccsa.sim.slurm create DIR --jobs 200 --seed 1 --clock real
  export PATH="$(python -m ccsa.sim.slurm bin DIR):$PATH"      # or set slurmBinDir
  squeue --noheader --cluster cluster1 --all --json
  python -m ccsa.sim.slurm advance DIR 600       # simulated clock (--clock sim, the default)
  python -m ccsa.sim.slurm fault DIR dbd_down --calls 3
  python -m ccsa.sim.slurm fault DIR dbd_lag --seconds 600 --start T --end T2
  python -m ccsa.sim.slurm skew DIR -900          # Slurm's clock 15 min behind this host's
  python -m ccsa.sim.slurm jobs DIR              # ground truth, one JSON object per line

With --clock sim, time stands still until `advance`; with --clock real, the schedule starts at
creation time and follows the wall clock, so nothing needs to drive it.
See docs/simulator.md for what is simulated and how it differs from real Slurm.
"""


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m ccsa.sim.slurm",
        description=HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = p.add_subparsers(dest="cmd", required=True, metavar="COMMAND")
    c = sub.add_parser("create", help="create a cluster in DIR and print its bin dir")
    c.add_argument("dir", type=Path)
    c.add_argument("--jobs", type=int, default=0, help="jobs in the initial workload (0)")
    c.add_argument("--rate", type=float, default=10.0, help="workload arrivals per minute (10)")
    c.add_argument("--seed", type=int, default=0)
    c.add_argument("--clock", choices=("real", "sim"), default="sim")
    c.add_argument("--start", type=float, default=None, help="schedule origin, Unix s (now)")
    c.add_argument(
        "--data-parser", default="v0.0.42", choices=("v0.0.41", "v0.0.42", "v0.0.43", "v0.0.44")
    )
    c.add_argument("--clusters", default="cluster1", help="comma-separated cluster names")
    c.add_argument("--nodes", type=int, default=14, help="nodes per cluster (14)")
    c.add_argument("--min-job-age", type=float, default=300.0)
    c.add_argument("--dbd-lag", type=float, default=0.0)
    c.add_argument("--store-scripts", action="store_true")
    c.add_argument(
        "--cred-expire", type=float, default=120.0, help="AuthInfo cred_expire: requeue wait - 1"
    )
    c.add_argument(
        "--admin-level",
        default="Operator",
        choices=("Not Set", "None", "Operator", "Administrator"),
    )
    b = sub.add_parser("bin", help="print the directory holding the executables")
    b.add_argument("dir", type=Path)
    a = sub.add_parser("advance", help="move the simulated clock forward by SECONDS")
    a.add_argument("dir", type=Path)
    a.add_argument("seconds", type=float)
    w = sub.add_parser("workload", help="submit more seeded jobs arriving from now")
    w.add_argument("dir", type=Path)
    w.add_argument("--jobs", type=int, required=True)
    w.add_argument("--rate", type=float, default=10.0)
    f = sub.add_parser("fault", help="inject a fault (or --clear)")
    f.add_argument("dir", type=Path)
    f.add_argument(
        "kind",
        nargs="?",
        choices=faults.KINDS,
    )
    f.add_argument(
        "--command", default="*", help="sacct|squeue|scontrol|sinfo|sacctmgr|sdiag|* (*)"
    )
    f.add_argument(
        "--seconds", type=float, default=0.0, help="latency; dbd_lag: slurmdbd's delay (s)"
    )
    f.add_argument("--exit-code", type=int, default=1)
    f.add_argument("--message", default="")
    f.add_argument("--calls", type=int, default=None, help="only the next N calls")
    f.add_argument("--start", type=float, default=None)
    f.add_argument("--end", type=float, default=None)
    f.add_argument("--clear", action="store_true", help="remove every fault")
    k = sub.add_parser("skew", help="the Slurm hosts' clock runs SECONDS ahead (negative: behind)")
    k.add_argument("dir", type=Path)
    k.add_argument("seconds", type=float)
    j = sub.add_parser("jobs", help="ground truth at now, one JSON line per job")
    j.add_argument("dir", type=Path)
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from ccsa.sim.slurm.cluster import SimCluster

    try:
        if args.cmd == "create":
            sim = SimCluster.create(
                args.dir,
                clusters=tuple(x for x in args.clusters.split(",") if x),
                seed=args.seed,
                data_parser=args.data_parser,
                clock=args.clock,
                start=args.start,
                min_job_age=args.min_job_age,
                dbd_lag=args.dbd_lag,
                store_scripts=args.store_scripts,
                admin_level=args.admin_level,
                cred_expire=args.cred_expire,
            )
            if args.jobs:
                for name in sim.clusters:
                    sim.add_workload(args.jobs, rate_per_min=args.rate, cluster=name)
            print(sim.bin_dir.resolve())
        elif args.cmd == "bin":
            print(SimCluster.open(args.dir).bin_dir.resolve())
        elif args.cmd == "advance":
            print(SimCluster.open(args.dir).advance(args.seconds))
        elif args.cmd == "workload":
            sim = SimCluster.open(args.dir)
            ids = sim.add_workload(args.jobs, rate_per_min=args.rate)
            print(f"submitted {len(ids)} jobs, ids {ids[0]}..{ids[-1]}" if ids else "no jobs")
        elif args.cmd == "fault":
            sim = SimCluster.open(args.dir)
            if args.clear:
                sim.clear_faults()
            elif args.kind is None:
                print("\n".join(msgspec.json.encode(x).decode() for x in sim.faults()))
            else:
                sim.set_fault(
                    args.kind,
                    command=args.command,
                    seconds=args.seconds,
                    exit_code=args.exit_code,
                    message=args.message,
                    calls=args.calls,
                    start=args.start,
                    end=args.end,
                )
        elif args.cmd == "skew":
            SimCluster.open(args.dir).set_skew(args.seconds)
        elif args.cmd == "jobs":
            out = sys.stdout
            for t in SimCluster.open(args.dir).jobs():
                out.write(msgspec.json.encode(t).decode() + "\n")
    except (ValueError, FileNotFoundError) as exc:
        print(f"python -m ccsa.sim.slurm {args.cmd}: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
