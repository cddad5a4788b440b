"""Fault injection for the simulated Slurm commands: which faults apply to a call (pure) and
the real tools' error texts for outages.

``pick()`` selects the active faults for a command at a simulated time and returns the fault
list with counted faults decremented, so the caller can persist it under the lock. ``db_now()``
says how far slurmdbd has got through slurmctld's messages under ``dbd_lag`` faults, which act
on the times of job events, not on calls.
"""

from __future__ import annotations

import math

from ccsa.sim.slurm.model import Fault

KINDS = (
    "latency",
    "hang",
    "exit",
    "truncate",
    "garbage",
    "dbd_down",
    "ctld_down",
    "dbd_lag",
    "empty_user",
    "corrupt_record",
)
#: faults that change what sacct prints (not whether it answers)
SACCT_ONLY = ("empty_user", "corrupt_record")
DBD_COMMANDS = ("sacct", "sacctmgr")
CTLD_COMMANDS = ("squeue", "scontrol", "sinfo", "sdiag")

#: stderr of the real tools when slurmdbd / slurmctld cannot be reached (exit status 1)
#: the first line of a tool's own error, then the persist-connection lines all tools print
_PERSIST = (
    "{c}: error: slurm_persist_conn_open_without_init: failed to open persistent connection to "
    "host:slurmdbd:6819: Connection refused\n"
)
DBD_DOWN = {
    "sacct": (
        "sacct: error: slurm_persist_conn_open_without_init: failed to open persistent "
        "connection to host:slurmdbd:6819: Connection refused\n"
        "sacct: error: Sending PersistInit msg: Connection refused\n"
        "sacct: error: Problem talking to the database: Connection refused\n"
    ),
    "sacctmgr": (
        "sacctmgr: error: slurm_persist_conn_open_without_init: failed to open persistent "
        "connection to host:slurmdbd:6819: Connection refused\n"
        "sacctmgr: error: Sending PersistInit msg: Connection refused\n"
        "sacctmgr: error: Problem talking to the database: Connection refused\n"
    ),
}
for _c in CTLD_COMMANDS:  # with --cluster: slurmdbd resolves the cluster (see `pick`)
    DBD_DOWN[_c] = (
        _PERSIST.format(c=_c)
        + f"{_c}: error: Problem talking to the database: Connection refused\n"
    )
CTLD_DOWN = {
    "squeue": "slurm_load_jobs error: Unable to contact slurm controller (connect failure)\n",
    "scontrol": "slurm_load_jobs error: Unable to contact slurm controller (connect failure)\n",
    "sinfo": "slurm_load_partitions: Unable to contact slurm controller (connect failure)\n",
    "sdiag": "slurm_get_statistics: Unable to contact slurm controller (connect failure)\n",
}


def validate(f: Fault) -> None:
    """Raise ValueError naming the problem if ``f`` cannot be applied."""
    if f.kind not in KINDS:
        raise ValueError(f"unknown fault kind {f.kind!r} (known: {', '.join(KINDS)})")
    if f.command not in ("*", *DBD_COMMANDS, *CTLD_COMMANDS):
        raise ValueError(f"unknown command {f.command!r} for fault {f.kind}")
    if f.calls is not None and f.calls < 1:
        raise ValueError("fault calls must be >= 1")
    if f.kind in ("latency", "dbd_lag") and f.seconds <= 0:
        raise ValueError(f"{f.kind} fault needs seconds > 0")
    if f.kind == "dbd_lag" and (f.calls is not None or f.command != "*"):
        raise ValueError("dbd_lag acts on job events in its start..end window, not on calls")


def db_now(faults: list[Fault], now: float) -> float:
    """The time up to which slurmdbd has received slurmctld's job messages at ``now``.

    A ``dbd_lag`` fault delays every message of a job event (submit, start, end) that happens
    in its ``start``..``end`` window by ``seconds``; slurmctld's agent queue is FIFO, so events
    after the window wait behind it until ``end + seconds``. sacct answers from slurmdbd, so it
    shows the cluster as it was at ``db_now`` (squeue/scontrol still show ``now``). Without a
    window a lag applies from the beginning and never ends.
    """
    t = now
    for f in faults:
        if f.kind != "dbd_lag":
            continue
        start = f.start if f.start is not None else -math.inf
        end = f.end if f.end is not None else math.inf
        if now < start or now >= end + f.seconds:
            continue
        t = min(t, max(start, min(now - f.seconds, end)))
    return t


def _applies(f: Fault, command: str, now: float, with_cluster: bool = False) -> bool:
    if f.kind == "dbd_lag" or f.command not in ("*", command):
        return False
    if f.kind in SACCT_ONLY and command != "sacct":
        return False
    if f.kind == "dbd_down" and command not in DBD_COMMANDS and not with_cluster:
        return False
    if f.kind == "ctld_down" and command not in CTLD_COMMANDS:
        return False
    if f.start is not None and now < f.start:
        return False
    if f.end is not None and now >= f.end:
        return False
    return f.calls is None or f.calls > 0


def pick(
    faults: list[Fault], command: str, now: float, *, with_cluster: bool = False
) -> tuple[list[Fault], list[Fault], bool]:
    """Return (active faults for this call, remaining fault list, whether counters changed).

    ``with_cluster``: the call names a cluster (``-M``/``--cluster``); then ``dbd_down`` hits
    squeue, sinfo and scontrol too, which ask slurmdbd for the cluster (24.11 test bed,
    docs/real-slurm.md "slurmdbd stopped while short jobs start and end").
    """
    active: list[Fault] = []
    remaining: list[Fault] = []
    changed = False
    for f in faults:
        if _applies(f, command, now, with_cluster):
            active.append(f)
            if f.calls is not None:
                changed = True
                if f.calls > 1:
                    remaining.append(
                        Fault(
                            kind=f.kind,
                            command=f.command,
                            seconds=f.seconds,
                            exit_code=f.exit_code,
                            message=f.message,
                            calls=f.calls - 1,
                            start=f.start,
                            end=f.end,
                        )
                    )
                continue
        remaining.append(f)
    return active, remaining, changed
