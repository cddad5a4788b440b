"""The simulated cluster's state directory: read and write it atomically.

Layout of ``DIR``::

    state.msgpack cluster specs and the computed schedule               (written on create/submit)
    specs.msgpack the submitted job specs (only SimCluster needs them)
    clock.json    {"now": T} for the simulated clock                   (written on advance)
    cache/        rendered sacct records of finished jobs (see cmd.SacctCache)
    faults.json   injected faults (counted ones are decremented under an flock)
    calls.log     one JSON line per simulated command run (argv, time): call statistics
    bin/          the executables sacct, squeue, scontrol, sinfo, sacctmgr

Every file is replaced with write-to-temp + ``os.replace`` so a concurrently running command
never reads half a file. Kept light (stdlib + msgspec): the executables import it.
"""

from __future__ import annotations

import fcntl
import os
import time
from pathlib import Path

import msgspec

from ccsa.sim.slurm.model import Fault, JobSpec, State

STATE = "state.msgpack"
SPECS = "specs.msgpack"
CLOCK = "clock.json"
FAULTS = "faults.json"
CALLS = "calls.log"
LOCK = ".lock"


class Clock(msgspec.Struct):
    now: float
    #: how far the Slurm hosts' clock runs ahead of this host's (negative: behind)
    skew: float = 0.0


_state_dec = msgspec.msgpack.Decoder(State)  # msgpack: smaller and a bit faster than JSON


class Specs(msgspec.Struct, array_like=True):
    specs: list[JobSpec]
    first_ids: list[int]


_specs_dec = msgspec.msgpack.Decoder(Specs)
_clock_dec = msgspec.json.Decoder(Clock)
_faults_dec = msgspec.json.Decoder(list[Fault])


def write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def load_state(directory: Path, *, with_specs: bool = False) -> State:
    """The schedule; ``with_specs`` also loads the submitted specs (the commands do not)."""
    try:
        st = _state_dec.decode((directory / STATE).read_bytes())
        if with_specs:
            sp = _specs_dec.decode((directory / SPECS).read_bytes())
            st.specs, st.first_ids = sp.specs, sp.first_ids
        return st
    except FileNotFoundError:
        raise FileNotFoundError(
            f"{directory}: not a simulated Slurm directory (no {STATE}); "
            "create one with `python -m ccsa.sim.slurm create DIR`"
        ) from None


def save_state(directory: Path, state: State) -> None:
    """Specs first: a reader of a new state.msgpack always finds matching specs."""
    write_atomic(directory / SPECS, msgspec.msgpack.encode(Specs(state.specs, state.first_ids)))
    slim = msgspec.structs.replace(state, specs=[], first_ids=[])
    write_atomic(directory / STATE, msgspec.msgpack.encode(slim))


def load_clock(directory: Path, state: State) -> Clock:
    """The stored clock: the simulated time (``origin`` before any) and the Slurm hosts' skew."""
    try:
        return _clock_dec.decode((directory / CLOCK).read_bytes())
    except FileNotFoundError:
        return Clock(state.origin)


def load_now(directory: Path, state: State, *, skewed: bool = True) -> float:
    """The cluster's "now": the simulated clock, or the wall clock in real-time mode, plus the
    Slurm hosts' clock skew (``skewed=False``: this host's clock, without it)."""
    clock = load_clock(directory, state)
    host = time.time() if state.clock == "real" else clock.now
    return host + (clock.skew if skewed else 0.0)


def save_now(directory: Path, now: float, skew: float | None = None) -> None:
    """Store the simulated time (ignored in real-time mode) and, if given, a new skew."""
    if skew is None:
        try:
            skew = _clock_dec.decode((directory / CLOCK).read_bytes()).skew
        except FileNotFoundError:
            skew = 0.0
    write_atomic(directory / CLOCK, msgspec.json.encode(Clock(now, skew)))


def load_faults(directory: Path) -> list[Fault]:
    try:
        return _faults_dec.decode((directory / FAULTS).read_bytes())
    except FileNotFoundError:
        return []


def save_faults(directory: Path, faults: list[Fault]) -> None:
    write_atomic(directory / FAULTS, msgspec.json.encode(faults))


class Locked:
    """``with Locked(dir):`` serialises read-modify-write of the fault counters."""

    def __init__(self, directory: Path) -> None:
        self.path = directory / LOCK
        self.fd = -1

    def __enter__(self) -> Locked:
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        fcntl.flock(self.fd, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc: object) -> None:
        fcntl.flock(self.fd, fcntl.LOCK_UN)
        os.close(self.fd)


def log_call(directory: Path, command: str, argv: list[str], now: float) -> None:
    line = msgspec.json.encode({"command": command, "argv": argv, "now": now, "t": time.time()})
    with open(directory / CALLS, "ab") as f:  # O_APPEND: one short write per line
        f.write(line + b"\n")
