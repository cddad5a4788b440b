"""Entry point of the simulated executables (``sacct``, ``squeue``, ``scontrol``, ``sinfo``,
``sacctmgr``): parse the real tools' flags, apply injected faults, print the document.

``main(command, state_dir, argv) -> exit status``. Only stdlib + msgspec + our render module are
imported, because every call of a simulated tool starts a fresh Python. The option parser is
hand-written (getopt-like, as Slurm's own) because argparse would print argparse's usage text
and exit 2 where Slurm prints ``unrecognized option`` and exits 1.
"""

from __future__ import annotations

import gc
import mmap
import os
import sys
import time
from collections.abc import Collection, Iterable, Sequence
from pathlib import Path
from typing import Any

import msgspec

from ccsa.sim.slurm import faults as faultmod
from ccsa.sim.slurm import render, render_nodes
from ccsa.sim.slurm import state as statemod
from ccsa.sim.slurm.model import DATA_PARSERS, RENDERABLE, Run, State

#: Slurm's short state names (``squeue -t PD,R``, ``sacct -s CD,F``, the ST column).
SHORT_STATES = {
    "PD": "PENDING",
    "R": "RUNNING",
    "S": "SUSPENDED",
    "CG": "COMPLETING",
    "SO": "STAGE_OUT",
    "CD": "COMPLETED",
    "CA": "CANCELLED",
    "F": "FAILED",
    "TO": "TIMEOUT",
    "NF": "NODE_FAIL",
    "OOM": "OUT_OF_MEMORY",
    "PR": "PREEMPTED",
    "RQ": "REQUEUED",
    "BF": "BOOT_FAIL",
    "DL": "DEADLINE",
}
SHORT_OF = {v: k for k, v in SHORT_STATES.items()}


def state_set(command: str, raw: str) -> set[str]:
    """``-t pd,running`` -> {"PENDING", "RUNNING"}; unknown names are an error like Slurm's."""
    out = set()
    for name in raw.upper().split(","):
        full = SHORT_STATES.get(name, name)
        if full not in (*SHORT_STATES.values(), "ALL"):
            raise Usage(f"{command}: error: Invalid job state specified: {name}")
        out.add(full)
    return out


#: The default squeue state filter (without ``-t``).
QUEUE_STATES = {"PENDING", "RUNNING", "SUSPENDED", "COMPLETING", "STAGE_OUT"}


class Usage(Exception):
    """A user mistake: print ``message`` on stderr and exit with ``status``."""

    def __init__(self, message: str, status: int = 1) -> None:
        super().__init__(message)
        self.status = status


# --------------------------------------------------------------------------------------------
# option parsing


class Opts:
    def __init__(self) -> None:
        self.values: dict[str, str] = {}
        self.flags: set[str] = set()
        self.args: list[str] = []


def parse(
    command: str,
    argv: Sequence[str],
    *,
    values: dict[str, str],
    flags: dict[str, str],
    optional: Iterable[str] = ("json", "yaml"),
) -> Opts:
    """getopt_long-like: ``values``/``flags`` map every spelling (``-M``, ``--cluster``) to a key.

    ``optional`` keys take an optional ``=value`` (``--json=v0.0.42``).
    """
    opts = Opts()
    opt_keys = set(optional)
    i = 0
    while i < len(argv):
        a = argv[i]
        i += 1
        if a == "--":
            opts.args.extend(argv[i:])
            break
        if a.startswith("--"):
            name, eq, val = a.partition("=")
            if name[2:] in opt_keys:
                opts.values[name[2:]] = val if eq else ""
                continue
            if name in flags:
                if eq:
                    raise Usage(f"{command}: option '{name}' doesn't allow an argument")
                opts.flags.add(flags[name])
                continue
            if name in values:
                if not eq:
                    if i >= len(argv):
                        raise Usage(f"{command}: option '{name}' requires an argument")
                    val = argv[i]
                    i += 1
                opts.values[values[name]] = val
                continue
            raise Usage(
                f"{command}: unrecognized option '{a}'\n"
                f'Try "{command} --help" for more information'
            )
        if a.startswith("-") and len(a) > 1:
            j = 1
            while j < len(a):
                short = "-" + a[j]
                if short in flags:
                    opts.flags.add(flags[short])
                    j += 1
                    continue
                if short in values:
                    rest = a[j + 1 :]
                    if not rest:
                        if i >= len(argv):
                            raise Usage(f"{command}: option requires an argument -- '{a[j]}'")
                        rest = argv[i]
                        i += 1
                    opts.values[values[short]] = rest
                    break
                raise Usage(
                    f"{command}: invalid option -- '{a[j]}'\n"
                    f'Try "{command} --help" for more information'
                )
            continue
        opts.args.append(a)
    return opts


def _spellings(table: dict[str, tuple[str, ...]]) -> dict[str, str]:
    return {s: key for key, names in table.items() for s in names}


def json_version(command: str, opts: Opts, state: State) -> str | None:
    """The data_parser to render, or None when ``--json`` was not given."""
    if "json" not in opts.values:
        return None
    v = opts.values["json"]
    if v == "":
        return state.data_parser
    if v == "list":
        raise Usage(
            f"{command}: Possible data_parser plugins:\n"
            + "".join(f"{command}: data_parser/{x}\n" for x in RENDERABLE[state.data_parser]),
            0,
        )
    v = v.removeprefix("data_parser/")
    if "+" in v:
        raise Usage(f"{command}: error: the simulator does not render data_parser flags ({v!r})")
    if v not in RENDERABLE[state.data_parser]:
        raise Usage(f"{command}: error: Unable to find plugin: data_parser/{v}")
    return v


def clusters(command: str, opts: Opts, state: State) -> list[str]:
    raw = opts.values.get("cluster")
    known = [c.name for c in state.clusters]
    if raw is None:
        return known[:1]
    if raw.lower() == "all":
        return known
    out = []
    for name in raw.split(","):
        if name not in known:
            raise Usage(f"{command}: error: No cluster '{name}' known by database.")
        out.append(name)
    return out


def job_ids(command: str, raw: str) -> list[int]:
    """``-j 12,13_2,14+1`` -> base ids (array/het selectors keep their base id)."""
    out = []
    for part in raw.split(","):
        part = part.strip()
        if not part:
            continue
        base = part.split("_", 1)[0].split("+", 1)[0].split(".", 1)[0]
        if not base.isdigit():
            raise Usage(f"{command}: error: Invalid job id: {part}")
        out.append(int(base))
    return out


def parse_time(command: str, raw: str, now: float) -> float:
    """Slurm's ``YYYY-MM-DD[THH:MM[:SS]]`` (local time = TZ of the environment), ``now``,
    ``now-N[minutes|hours|days]`` or a Unix epoch with a leading ``@`` are not all Slurm has,
    but cover what ccsa and people type."""
    r = raw.strip()
    if r.lower() == "now":
        return now
    if r.lower().startswith("now-"):
        num = r[4:]
        mult = 1
        for suffix, m in (("days", 86400), ("hours", 3600), ("minutes", 60), ("seconds", 1)):
            if num.endswith(suffix):
                num, mult = num[: -len(suffix)], m
                break
        if num.isdigit():
            return now - int(num) * mult
    for fmt in ("%Y-%m-%dT%H:%M:%S", "%Y-%m-%dT%H:%M", "%Y-%m-%d"):
        try:
            tm = time.strptime(r, fmt)
        except ValueError:
            continue
        return time.mktime(tm)
    raise Usage(f"{command}: error: Invalid time specification (pos=0): {raw}")


def midnight(now: float) -> float:
    lt = time.localtime(now)
    return time.mktime((lt.tm_year, lt.tm_mon, lt.tm_mday, 0, 0, 0, 0, 0, -1))


# --------------------------------------------------------------------------------------------
# output


def dump(doc: Any) -> bytes:
    """Slurm's CLI serializer: 2-space indent, ``/`` escaped as ``\\/``, trailing newline."""
    return msgspec.json.format(msgspec.json.encode(doc), indent=2).replace(b"/", b"\\/") + b"\n"


def fragment(job_doc: Any) -> bytes:
    """One ``jobs[]`` element exactly as ``dump`` prints it inside the list (indent 4)."""
    return (
        msgspec.json.format(msgspec.json.encode(job_doc), indent=2)
        .replace(b"/", b"\\/")
        .replace(b"\n", b"\n    ")
    )


def dump_jobs(out: Out, frags: list[bytes | memoryview], rest: dict[str, Any]) -> None:
    """Write ``dump({"jobs": [...], **rest})`` from pre-rendered job fragments (same bytes)."""
    tail = dump(rest)[2:]  # b'{\n  "meta": ...\n}\n' without '{\n'
    if not frags:
        out.write(b'{\n  "jobs": [],\n' + tail)
        return
    out.write(b'{\n  "jobs": [\n    ')
    last = len(frags) - 1
    for i, f in enumerate(frags):
        out.write(f)
        out.write(b",\n    " if i < last else b"\n  ],\n")
    out.write(tail)


class CacheIndex(msgspec.Struct, array_like=True):
    """Where each cached fragment lives in the data file: position -> (offset, length)."""

    generation: int
    entries: dict[int, tuple[int, int]]


class SacctCache:
    """Rendered sacct records of finished jobs (they never change), per data_parser.

    ``cache/sacct-DP-S.idx`` (msgpack index) + ``cache/sacct-DP-S-gN.dat`` (fragments appended,
    never rewritten): readers mmap the data file and hand slices of it to ``write``, so a
    100 MB window costs page-cache copies, not a decode. A new schedule generation uses a new
    data file, so a reader never sees a file shrink under its mapping.
    """

    def __init__(self, directory: Path, st: State, dp: str, script: bool) -> None:
        self.dir = directory / "cache"
        self.stem = f"sacct-{dp}-{int(script)}"
        self.generation = st.generation
        self.entries: dict[int, tuple[int, int]] = {}
        self.view: memoryview | None = None
        self.new: dict[int, bytes] = {}
        try:
            idx = msgspec.msgpack.decode(
                (self.dir / f"{self.stem}.idx").read_bytes(), type=CacheIndex
            )
        except (FileNotFoundError, msgspec.DecodeError):
            return
        if idx.generation != st.generation:
            return
        try:
            with open(self._data_path(), "rb") as f:
                size = os.fstat(f.fileno()).st_size
                if size:
                    self.view = memoryview(mmap.mmap(f.fileno(), size, access=mmap.ACCESS_READ))
        except FileNotFoundError:
            return
        self.entries = {k: v for k, v in idx.entries.items() if v[0] + v[1] <= size}

    def _data_path(self) -> Path:
        return self.dir / f"{self.stem}-g{self.generation}.dat"

    def get(self, pos: int) -> memoryview | bytes | None:
        e = self.entries.get(pos)
        if e is None or self.view is None:
            return self.new.get(pos)
        return self.view[e[0] : e[0] + e[1]]

    def add(self, pos: int, frag: bytes) -> None:
        if pos not in self.entries:
            self.new[pos] = frag

    def save(self, directory: Path) -> None:
        """Append the new fragments and publish the index (under the directory lock)."""
        if not self.new:
            return
        self.dir.mkdir(exist_ok=True)
        with statemod.Locked(directory):
            try:
                idx = msgspec.msgpack.decode(
                    (self.dir / f"{self.stem}.idx").read_bytes(), type=CacheIndex
                )
                entries = idx.entries if idx.generation == self.generation else {}
            except (FileNotFoundError, msgspec.DecodeError):
                entries = {}
            path = self._data_path()
            with open(path, "ab") as f:
                offset = f.seek(0, os.SEEK_END)
                for pos, frag in self.new.items():
                    if pos in entries:
                        continue
                    f.write(frag)
                    entries[pos] = (offset, len(frag))
                    offset += len(frag)
            statemod.write_atomic(
                self.dir / f"{self.stem}.idx",
                msgspec.msgpack.encode(CacheIndex(self.generation, entries)),
            )
            for old in self.dir.glob(f"{self.stem}-g*.dat"):
                if old != path:
                    old.unlink(missing_ok=True)  # readers keep their mapping of the inode
        self.new = {}


def warm_sacct_cache(directory: Path, st: State, now: float) -> int:
    """Render every job finished at ``now`` into the cache of the default data_parser."""
    dp = st.data_parser
    cache = SacctCache(directory, st, dp, False)
    ctx = render.Ctx(st, dp, now)
    for pos, j in enumerate(st.jobs):
        if pos in cache.entries or j.submit > now:
            continue
        v = render.View(j, now)
        if v.phase == "done":
            cache.add(pos, fragment(render.sacct_job(ctx, v, script=False, lag=0.0)))
    total = len(cache.entries) + len(cache.new)
    cache.save(directory)
    return total


def envelope(
    payload_key: str, payload: Any, meta: dict[str, Any], *, queue: bool, now: float
) -> dict[str, Any]:
    doc: dict[str, Any] = {payload_key: payload}
    if queue:
        doc["last_backfill"] = render.nv(int(now))
        doc["last_update"] = render.nv(int(now))
    doc["meta"] = meta
    doc["errors"] = []
    doc["warnings"] = []
    return doc


class Out:
    """What a command prints: stdout as chunks (a 10k-job sacct is ~100 MB: no extra copies)."""

    def __init__(self) -> None:
        self.chunks: list[bytes | memoryview] = []
        self.stderr = ""
        self.status = 0

    def write(self, data: bytes | memoryview) -> None:
        self.chunks.append(data)

    def write_dump(self, doc: Any) -> None:
        self.chunks.append(dump(doc))

    @property
    def stdout(self) -> bytes:
        return b"".join(self.chunks)


def _who() -> tuple[str, str]:
    try:
        import grp
        import pwd

        return pwd.getpwuid(os.getuid()).pw_name, grp.getgrgid(os.getgid()).gr_name
    except (KeyError, ImportError):
        return str(os.getuid()), str(os.getgid())


# --------------------------------------------------------------------------------------------
# commands


def cmd_sacct(
    argv: list[str],
    st: State,
    now: float,
    out: Out,
    directory: Path,
    dbnow: float | None = None,
    *,
    blank_users: bool = False,
    corrupt_one: bool = False,
) -> None:
    """sacct answers from slurmdbd, which has slurmctld's job events up to ``dbnow``
    (``faults.db_now``; = ``now`` without a ``dbd_lag`` fault).

    ``blank_users``: the host's user lookup fails (sssd/LDAP down), so ``user`` and ``group``
    are empty in every record. ``corrupt_one``: the first job record's ``time.start`` is not a
    number (one malformed record in an otherwise good answer)."""
    dbnow = now if dbnow is None else dbnow
    o = parse(
        "sacct",
        argv,
        values=_spellings(
            {
                "cluster": ("-M", "--cluster", "--clusters"),
                "start": ("-S", "--starttime"),
                "end": ("-E", "--endtime"),
                "jobs": ("-j", "--jobs"),
                "state": ("-s", "--state"),
                "format": ("-o", "--format"),
                "user": ("-u", "--user", "--uid"),
                "account": ("-A", "--account", "--accounts"),
                "partition": ("-r", "--partition"),
                "nodelist": ("-N", "--nodelist"),
                "delimiter": ("--delimiter",),
            }
        ),
        flags=_spellings(
            {
                "allusers": ("-a", "--allusers"),
                "allocations": ("-X", "--allocations"),
                "duplicates": ("-D", "--duplicates"),
                "noheader": ("-n", "--noheader"),
                "parsable": ("-p", "--parsable", "-P", "--parsable2"),
                "script": ("-B", "--batch-script"),
                "allclusters": ("-L", "--allclusters"),
                "long": ("-l", "--long"),
                "verbose": ("-v", "--verbose"),
                "quiet": ("-Q", "--quiet"),
            }
        ),
    )
    if o.args:
        raise Usage(f"sacct: error: Unknown arguments: {' '.join(o.args)}")
    dp = json_version("sacct", o, st)
    names = [c.name for c in st.clusters] if "allclusters" in o.flags else clusters("sacct", o, st)
    ids = set(job_ids("sacct", o.values["jobs"])) if "jobs" in o.values else None
    t1 = parse_time("sacct", o.values["end"], now) if "end" in o.values else now
    if "start" in o.values:
        t0 = parse_time("sacct", o.values["start"], now)
    else:
        t0 = 0.0 if ids is not None else midnight(now)
    if t1 < t0:
        raise Usage("sacct: error: start time is after end time")
    user = _who()[0]
    if "user" in o.values:
        users: set[str] | None = set(o.values["user"].split(","))
    elif "allusers" in o.flags or ids is not None or user == "root":
        users = None
    else:
        users = {user}
    states = state_set("sacct", o.values["state"]) if "state" in o.values else None
    ctx = render.Ctx(st, dp or st.data_parser, dbnow)
    want_script = "script" in o.flags
    lags = {c.name: c.dbd_lag for c in st.clusters}
    scripts_ok = {c.name: c.store_scripts for c in st.clusters}
    selected = []
    pos_of: dict[int, int] = {}
    for pos, j in enumerate(st.jobs):
        if j.cluster not in names or j.submit > dbnow:
            continue
        if ids is not None and not (
            j.job_id in ids or j.array_job_id in ids or j.het_job_id in ids
        ):
            continue
        if users is not None and j.user not in users:
            continue
        selected.append(j)
        pos_of[id(j)] = pos
    items = render.collapse_arrays(render.visible(selected, dbnow))
    script = want_script and all(scripts_ok[n] for n in names)
    cache = SacctCache(directory, st, ctx.dp, script) if dp is not None else None
    frags: list[bytes | memoryview] = []
    docs: list[dict[str, Any]] = []
    for item in items:
        v = item[0] if isinstance(item, tuple) else item
        j = v.job
        window = ids is None or "start" in o.values or "end" in o.values
        current = not window or _current_in_window(ctx, v, t0, t1)
        if states is not None and v.state not in states:
            current = False
        earlier = _earlier_records(v, window, current, "duplicates" in o.flags, t0, t1)
        if states is not None:
            earlier = [r for r in earlier if r.ended in states]
        for r in earlier:
            d = render.sacct_job(
                ctx, item, script=False, lag=0.0, run_override=r, state_override=r.ended
            )
            if blank_users:
                d["user"] = d["group"] = ""
            docs.append(d)
            if dp is not None:
                frags.append(fragment(d))
        if not current:
            continue
        pos = pos_of[id(j)]
        cached = (
            cache.get(pos)
            if cache is not None
            and v.phase == "done"
            and not isinstance(item, tuple)
            and not blank_users
            and not corrupt_one
            else None
        )
        if cached is not None:
            frags.append(cached)
            continue
        d = render.sacct_job(ctx, item, script=script, lag=lags[j.cluster])
        faulty = blank_users or corrupt_one
        if blank_users:
            d["user"] = d["group"] = ""
        if corrupt_one:
            d["time"]["start"] = "corrupt"
            corrupt_one = False
        docs.append(d)
        if dp is not None:
            frag = fragment(d)
            frags.append(frag)
            done = v.phase == "done" and not isinstance(item, tuple)
            if cache is not None and done and not faulty:
                cache.add(pos, frag)
    if dp is None:
        if want_script:
            for d in docs:
                out.write((f"Batch Script for {d['job_id']}\n" + "-" * 80 + "\n").encode())
                out.write((d["script"] or "NONE\n").encode())
            return
        _table(
            out,
            ["JobID", "JobName", "Partition", "Account", "AllocCPUS", "State", "ExitCode"],
            [
                [
                    str(d["job_id"]),
                    d["name"],
                    d["partition"],
                    d["account"],
                    str(_tres(d, "cpu")),
                    d["state"]["current"][0],
                    "0:0",
                ]
                for d in docs
            ],
            "noheader" in o.flags,
        )
        return
    if cache is not None and len(cache.new) >= 20:
        cache.save(directory)  # keep what we rendered: finished records never change
    user, group = _who()
    rest = {
        "meta": render.meta(st, dp, ["sacct", *argv], user, group),
        "errors": [],
        "warnings": [],
    }
    dump_jobs(out, frags, rest)


def _current_in_window(ctx: render.Ctx, v: render.View, t0: float, t1: float) -> bool:
    """The job's current record existed (eligible .. end) at some moment of [t0, t1]; after a
    requeue it is eligible ``cred_expire`` + 1 s after the requeue (render.sacct_job)."""
    j = v.job
    eligible = j.eligible
    if v.earlier and v.earlier[-1].ended in render.REQUEUE_STATES:
        eligible = v.earlier[-1].end + ctx.requeue_delay[j.cluster]
    end_t = (v.run.end if v.run else j.end) if v.phase == "done" else None
    return not (eligible > t1 or (end_t is not None and end_t < t0))


def _earlier_records(
    v: render.View, window: bool, current: bool, duplicates: bool, t0: float, t1: float
) -> list[Run]:
    """The job's earlier records (requeued, preempted, resized runs) that sacct prints.

    ``--duplicates`` prints every record the query selects. Without it sacct keeps, per job
    id, only the latest selected record plus the records a resize ended (slurmdbd's
    ``as_mysql_jobacct_process.c``). So ``-j`` shows only the current record, and a time
    window shows an earlier run only while the job's current record is not in the window
    (a requeued job that is not eligible yet, or whose current record began after it) --
    checked on the 24.11 test bed (docs/real-slurm.md "Lifecycles of issue 18"): a job
    requeued then cancelled while pending shows REQUEUED in a window until the cancelled
    record becomes eligible, then only CANCELLED.
    """
    runs = [r for r in v.earlier if r.begin <= t1 and r.end >= t0] if window else list(v.earlier)
    if duplicates:
        return runs
    if not window:
        return []
    if current:
        return [r for r in runs if r.ended == "RESIZING"]
    return [r for r in runs[:-1] if r.ended == "RESIZING"] + runs[-1:]


def _tres(d: dict[str, Any], typ: str) -> int:
    for t in d["tres"]["allocated"]:
        if t["type"] == typ:
            return int(t["count"])
    return 0


def _table(out: Out, header: list[str], rows: list[list[str]], noheader: bool) -> None:
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(header)]
    lines = []
    if not noheader:
        lines.append(" ".join(h.rjust(w) for h, w in zip(header, widths, strict=True)))
        lines.append(" ".join("-" * w for w in widths))
    lines.extend(" ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)) for r in rows)
    out.write(("\n".join(lines) + "\n").encode())


def _queue_items(
    st: State, cluster: str, now: float, only: Collection[int] | None = None
) -> list[Any]:
    """Jobs still in slurmctld memory (pending, running, or ended < MinJobAge ago).

    ``only``: at least every item one of whose ids (`_item_id`) is in it, built from the jobs
    with such an id only: the job itself, an array's tasks, a het job's components (a ``-j``
    query need not render every job of the cluster). Callers still filter by `_item_id`.
    """
    age = st.cluster(cluster).min_job_age
    views = []
    jobs = (
        j
        for j in st.jobs
        if j.cluster == cluster
        and (only is None or j.job_id in only or j.array_job_id in only or j.het_job_id in only)
    )
    for v in render.visible(jobs, now):
        if v.phase == "done":
            end = v.run.end if v.run else v.job.end
            if now - end >= age:
                continue
        views.append(v)
    return render.collapse_arrays(views)


def _item_id(item: Any) -> tuple[int, int, int]:
    v = item[0] if isinstance(item, tuple) else item
    j = v.job
    own = j.array_job_id if isinstance(item, tuple) else j.job_id
    return own, j.array_job_id, j.het_job_id


def cmd_squeue(argv: list[str], st: State, now: float, out: Out) -> None:
    o = parse(
        "squeue",
        argv,
        values=_spellings(
            {
                "cluster": ("-M", "--cluster", "--clusters"),
                "jobs": ("-j", "--jobs"),
                "states": ("-t", "--states"),
                "partition": ("-p", "--partition"),
                "user": ("-u", "--user"),
                "format": ("-o", "--format"),
                "Format": ("-O", "--Format"),
                "nodelist": ("-w", "--nodelist"),
                "account": ("-A", "--account"),
            }
        ),
        flags=_spellings(
            {
                "noheader": ("-h", "--noheader"),
                "all": ("-a", "--all"),
                "long": ("-l", "--long"),
                "array": ("-r", "--array"),
                "verbose": ("-v", "--verbose"),
                "local": ("--local",),
            }
        ),
    )
    if o.args:
        raise Usage(f"squeue: error: Unrecognized option: {o.args[0]}")
    dp = json_version("squeue", o, st)
    names = clusters("squeue", o, st)
    ids = job_ids("squeue", o.values["jobs"]) if "jobs" in o.values else None
    states: set[str] | None = QUEUE_STATES
    if "states" in o.values:
        raw = state_set("squeue", o.values["states"])
        states = None if "ALL" in raw else raw
    header = "cluster" in o.values and "noheader" not in o.flags
    user, group = _who()
    for cluster in names:
        items = _queue_items(st, cluster, now, only=None if ids is None else set(ids))
        if ids is not None:
            want = set(ids)
            items = [it for it in items if want & set(_item_id(it))]
            if len(ids) == 1 and not items:
                raise Usage("slurm_load_jobs error: Invalid job id specified")
        if states is not None:
            items = [it for it in items if (it[0] if isinstance(it, tuple) else it).state in states]
        if header:
            out.write(f"CLUSTER: {cluster}\n".encode())
        if dp is None:
            _queue_table(out, items, "noheader" in o.flags)
            continue
        ctx = render.Ctx(st, dp, now)
        docs = [render.queue_job(ctx, it) for it in items]
        out.write_dump(
            envelope(
                "jobs",
                docs,
                render.meta(st, dp, ["squeue", *argv], user, group),
                queue=True,
                now=now,
            )
        )


def _queue_table(out: Out, items: list[Any], noheader: bool) -> None:
    rows = []
    for it in items:
        v = it[0] if isinstance(it, tuple) else it
        j = v.job
        jid = (
            f"{j.array_job_id}_[{render.ranges_str(it[1])}]"
            if isinstance(it, tuple)
            else (f"{j.array_job_id}_{j.array_task_id}" if j.array_size else str(j.job_id))
        )
        nodes = render.compress([a.node for a in v.run.allocs]) if v.run else "(Priority)"
        rows.append([jid, j.partition, j.name[:8], j.user[:8], SHORT_OF.get(v.state, "?"), nodes])
    _table(out, ["JOBID", "PARTITION", "NAME", "USER", "ST", "NODELIST(REASON)"], rows, noheader)


def cmd_scontrol(argv: list[str], st: State, now: float, out: Out) -> None:
    o = parse(
        "scontrol",
        argv,
        values=_spellings({"cluster": ("-M", "--cluster", "--clusters")}),
        flags=_spellings(
            {
                "details": ("-d", "--details"),
                "oneliner": ("-o", "--oneliner"),
                "quiet": ("-Q", "--quiet"),
                "all": ("-a", "--all"),
            }
        ),
    )
    dp = json_version("scontrol", o, st)
    names = clusters("scontrol", o, st)
    args = o.args
    if not args:
        raise Usage("scontrol: error: no command given (the simulator is not interactive)")
    cluster = names[0]
    verb = args[0].lower()
    if verb == "show" and len(args) >= 2 and args[1].lower() in ("job", "jobs", "jobid"):
        want = set(job_ids("scontrol", args[2])) if len(args) >= 3 else None
        items = _queue_items(st, cluster, now, only=want)
        if want is not None:
            items = [it for it in items if want & set(_item_id(it))]
            if dp is None and not items:
                raise Usage("slurm_load_jobs error: Invalid job id specified")
            if dp is None and ("_" in args[2] or "+" in args[2]):
                items = _text_filter(items, args[2])
        ctx = render.Ctx(st, dp or st.data_parser, now)
        if dp is None:
            if not items:
                out.write(b"No jobs in the system\n")
            out.write("\n".join(render.scontrol_text(ctx, it) for it in items).encode())
            return
        user, group = _who()
        docs = [render.queue_job(ctx, it) for it in items]
        # Slurm quirk: meta.command drops the last argv element
        out.write_dump(
            envelope("jobs", docs, render.meta(st, dp, args[:-1], user, group), queue=True, now=now)
        )
        return
    if verb == "show" and len(args) == 2 and args[1].lower() in ("config", "conf"):
        out.write(_show_config(st, cluster, now).encode())
        return
    if verb == "write" and len(args) >= 3 and args[1].lower() == "batch_script":
        ids = job_ids("scontrol", args[2])
        if len(ids) != 1:
            raise Usage(f"error: Invalid job id specified for job {args[2]}")
        job = next(
            (j for j in st.jobs if j.cluster == cluster and j.submit <= now and j.job_id == ids[0]),
            None,
        )
        known = {_item_id(it)[0] for it in _queue_items(st, cluster, now, only=ids)}
        if job is None or ids[0] not in known:
            # Slurm 24.11 quirk: exit 0, nothing written, the reason on stderr only
            out.stderr = "job script retrieval failed: Invalid job id specified\n"
            return
        script = job.script
        dest = args[3] if len(args) >= 4 else f"slurm-{ids[0]}.sh"
        if dest == "-":
            out.write(script.encode())
        else:
            Path(dest).write_text(script)
            out.write(f"batch script for job {ids[0]} written to {dest}\n".encode())
        return
    raise Usage(f"scontrol: error: Invalid command: {' '.join(args)}")


def _show_config(st: State, cluster: str, now: float) -> str:
    """A few ``scontrol show config`` lines in Slurm's ``Key = Value`` layout."""
    spec = next(c for c in st.clusters if c.name == cluster)
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now))
    rows = [
        ("AccountingStorageType", "accounting_storage/slurmdbd"),
        ("ClusterName", cluster),
        ("MinJobAge", f"{int(spec.min_job_age)} sec"),
        ("PrivateData", spec.private_data),
        ("SlurmUser", "slurm(64030)"),
        ("SLURM_VERSION", DATA_PARSERS[st.data_parser][3]),
    ]
    return f"Configuration data as of {stamp}\n" + "".join(f"{k:<23} = {v}\n" for k, v in rows)


def _text_filter(items: list[Any], raw: str) -> list[Any]:
    """Text mode applies the ``_task`` / ``+offset`` selector (JSON mode does not)."""
    if "_" in raw:
        task = raw.split("_", 1)[1]
        return [
            it for it in items if not isinstance(it, tuple) and str(it.job.array_task_id) == task
        ]
    off = raw.split("+", 1)[1]
    return [it for it in items if not isinstance(it, tuple) and str(it.job.het_offset) == off]


def dbd_queue(st: State, now: float, dbnow: float) -> int:
    """Messages slurmctld holds for slurmdbd: job events (submit, allocation, start reset,
    end of each record) that happened after ``dbnow`` and by ``now``."""
    n = 0
    for j in st.jobs:
        if j.submit > now:
            continue
        times = [j.submit]
        for r in (*j.prior, *([j.run] if j.run else [])):
            times += [r.begin, r.start, r.end] if r.alloc else [r.start, r.end]
        if j.run is None:
            times.append(j.end)  # cancelled while pending
        n += sum(1 for t in times if dbnow < t <= now)
    return n


def cmd_sdiag(argv: list[str], st: State, now: float, out: Out, dbnow: float) -> None:
    """``sdiag`` (text or ``--json``): the request time and the DBD agent queue size (the
    messages slurmctld has not yet handed to slurmdbd, ``dbd_queue``); the other counters are
    0. Format: SchedMD ``src/sdiag/sdiag.c``; JSON fields: data_parser ``STATS_MSG``."""
    o = parse(
        "sdiag",
        argv,
        values=_spellings({"cluster": ("-M", "--cluster", "--clusters")}),
        flags=_spellings({"all": ("-a", "--all"), "reset": ("-r", "--reset")}),
    )
    if o.args:
        raise Usage(f"sdiag: error: Unknown arguments: {' '.join(o.args)}")
    dp = json_version("sdiag", o, st)
    queue = dbd_queue(st, now, dbnow)
    since = midnight(now)
    if dp is not None:
        user, group = _who()
        stats = {
            "req_time": render.nv(int(now)),
            "req_time_start": render.nv(int(since)),
            "server_thread_count": 1,
            "agent_queue_size": 0,
            "agent_count": 0,
            "agent_thread_count": 0,
            "dbd_agent_queue_size": queue,
        }
        out.write_dump(
            {
                "statistics": stats,
                "meta": render.meta(st, dp, ["sdiag", *argv], user, group),
                "errors": [],
                "warnings": [],
            }
        )
        return

    def ctime(t: float) -> str:
        return time.strftime("%a %b %d %H:%M:%S %Y", time.localtime(t))

    out.write(
        (
            "*******************************************************\n"
            f"sdiag output at {ctime(now)} ({int(now)})\n"
            f"Data since      {ctime(since)} ({int(since)})\n"
            "*******************************************************\n"
            "Server thread count:  1\n"
            "RPC queue enabled:    0\n"
            "Agent queue size:     0\n"
            "Agent count:          0\n"
            "Agent thread count:   0\n"
            f"DBD Agent queue size: {queue}\n\n"
        ).encode()
    )


def cmd_sinfo(argv: list[str], st: State, now: float, out: Out) -> None:
    o = parse(
        "sinfo",
        argv,
        values=_spellings(
            {
                "cluster": ("-M", "--cluster", "--clusters"),
                "partition": ("-p", "--partition"),
                "format": ("-o", "--format"),
                "states": ("-t", "--states"),
                "nodes": ("-n", "--nodes"),
            }
        ),
        flags=_spellings(
            {
                "noheader": ("-h", "--noheader"),
                "all": ("-a", "--all"),
                "Node": ("-N", "--Node"),
                "long": ("-l", "--long"),
                "summarize": ("-s", "--summarize"),
                "local": ("--local",),
            }
        ),
    )
    if o.args:
        raise Usage(f"sinfo: error: Unrecognized option: {o.args[0]}")
    dp = json_version("sinfo", o, st)
    header = "cluster" in o.values and "noheader" not in o.flags
    user, group = _who()
    for cluster in clusters("sinfo", o, st):
        spec = st.cluster(cluster)
        running = [
            v
            for v in render.visible((j for j in st.jobs if j.cluster == cluster), now)
            if v.phase == "running"
        ]
        ctx = render.Ctx(st, dp or st.data_parser, now)
        groups = render_nodes.sinfo(ctx, spec, running)
        if header:
            out.write(f"CLUSTER: {cluster}\n".encode())
        if dp is None:
            rows = [
                [
                    g["partition"]["name"],
                    "up",
                    g["node"]["state"][0].lower()[:5],
                    str(g["nodes"]["total"]),
                    render.compress(g["nodes"]["nodes"]),
                ]
                for g in groups
            ]
            _table(
                out,
                ["PARTITION", "AVAIL", "STATE", "NODES", "NODELIST"],
                rows,
                "noheader" in o.flags,
            )
            continue
        out.write_dump(
            envelope(
                "sinfo",
                groups,
                render.meta(st, dp, ["sinfo", *argv], user, group),
                queue=False,
                now=now,
            )
        )


def cmd_sacctmgr(argv: list[str], st: State, now: float, out: Out) -> None:
    o = parse(
        "sacctmgr",
        argv,
        values={},
        flags=_spellings(
            {
                "noheader": ("-n", "--noheader"),
                "parsable": ("-p", "--parsable", "-P", "--parsable2"),
                "immediate": ("-i", "--immediate"),
                "quiet": ("-Q", "--quiet"),
                "verbose": ("-v", "--verbose"),
            }
        ),
    )
    dp = json_version("sacctmgr", o, st)
    args = list(o.args)
    if len(args) < 2 or args[0].lower() not in ("list", "show", "ls"):
        raise Usage(f"sacctmgr: error: Unknown command: {' '.join(args) or '(none)'}")
    entity = args[1].lower()
    user, group = _who()
    if entity in ("cluster", "clusters"):
        payload, key = render_nodes.sacctmgr_clusters(st), "clusters"
        if dp is None:
            _table(
                out,
                ["Cluster", "ControlHost", "ControlPort"],
                [[c["name"], c["controller"]["host"], "6817"] for c in payload],
                "noheader" in o.flags,
            )
            return
    elif entity in ("user", "users"):
        names = []
        for a in args[2:]:
            if a.lower() in ("where", "withassoc", "withcoord"):
                continue
            names.extend(
                a.split("=", 1)[1].split(",") if a.lower().startswith("name=") else a.split(",")
            )
        payload, key = render_nodes.sacctmgr_users(st, dp or st.data_parser, names), "users"
        if dp is None:
            _table(
                out,
                ["User", "Def Acct", "Admin"],
                [
                    [u["name"], u["default"]["account"], u["administrator_level"][0]]
                    for u in payload
                ],
                "noheader" in o.flags,
            )
            return
    else:
        raise Usage(f"sacctmgr: error: Unknown option: {args[1]}")
    assert dp is not None
    out.write_dump(
        envelope(
            key,
            payload,
            render.meta(st, dp, ["sacctmgr", *argv], user, group),
            queue=False,
            now=now,
        )
    )


COMMANDS = ("sacct", "squeue", "scontrol", "sinfo", "sacctmgr", "sdiag")


def run(command: str, directory: Path, argv: list[str]) -> Out:
    """Run one simulated command; never raises for user mistakes (they become stderr + 1)."""
    out = Out()
    st = statemod.load_state(directory)
    now = statemod.load_now(directory, st)
    statemod.log_call(directory, command, argv, now)
    with statemod.Locked(directory):
        faults = statemod.load_faults(directory)
        named = any(a in ("-M", "--cluster", "--clusters") or a.startswith(("-M", "--cluster="))
                    for a in argv)  # fmt: skip
        active, remaining, changed = faultmod.pick(faults, command, now, with_cluster=named)
        if changed:
            statemod.save_faults(directory, remaining)
    dbnow = faultmod.db_now(faults, now)
    for f in active:
        if f.kind == "latency":
            time.sleep(f.seconds)
        elif f.kind == "hang":
            while True:
                time.sleep(3600)
    for f in active:
        if f.kind == "exit":
            out.stderr = (f.message or f"{command}: error: injected failure") + "\n"
            out.status = f.exit_code
            return out
        if f.kind == "dbd_down":
            out.stderr, out.status = faultmod.DBD_DOWN[command], 1
            return out
        if f.kind == "ctld_down":
            out.stderr, out.status = faultmod.CTLD_DOWN[command], 1
            return out
    try:
        if command == "sacct":
            kinds = {f.kind for f in active}
            cmd_sacct(
                argv,
                st,
                now,
                out,
                directory,
                dbnow,
                blank_users="empty_user" in kinds,
                corrupt_one="corrupt_record" in kinds,
            )
        elif command == "sdiag":
            cmd_sdiag(argv, st, now, out, dbnow)
        elif command == "squeue":
            cmd_squeue(argv, st, now, out)
        elif command == "scontrol":
            cmd_scontrol(argv, st, now, out)
        elif command == "sinfo":
            cmd_sinfo(argv, st, now, out)
        elif command == "sacctmgr":
            cmd_sacctmgr(argv, st, now, out)
        else:
            raise Usage(f"unknown simulated command {command!r} (known: {', '.join(COMMANDS)})")
    except Usage as exc:
        out.chunks = []
        out.stderr = str(exc) + "\n"
        out.status = exc.status
        return out
    for f in active:
        if f.kind == "truncate":
            data = out.stdout
            out.chunks = [data[: max(1, len(data) // 2)]]
        elif f.kind == "garbage":
            out.chunks = [b'{"jobs": [ {"job_id": 12, \x00\xff garbage <html>\n']
    return out


def main(command: str, directory: str, argv: list[str]) -> int:
    # One short-lived process per call, like the real tools: the cyclic garbage collector only
    # costs time here (decoding the state makes tens of thousands of objects; 2-3x slower).
    gc.disable()
    try:
        out = run(command, Path(directory), argv)
    except FileNotFoundError as exc:
        sys.stderr.write(f"{command}: error: {exc}\n")
        return 1
    try:
        sys.stdout.buffer.writelines(out.chunks)
        sys.stdout.flush()
    except BrokenPipeError:  # the reader went away (head, a killed daemon): like Slurm, quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    sys.stderr.write(out.stderr)
    return out.status
