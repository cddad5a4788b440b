"""`cc-slurm-adapter status`: ask the running daemon over its PrEp socket and print the answer.

Sends ``{"ccsa": "status"}`` to ``prepSockConnectPath`` (the daemon answers with its status
snapshot, `ccsa.daemon.snapshot.StatusSnapshot`) and prints it as readable tables: watermarks
and last sync per cluster, outbox depth, parked rejections, last errors, Slurm command latency,
counters. ``--json`` prints the raw snapshot. `fetch` is the I/O, `sections` (pure) turns a
snapshot into tables, `render` prints them with rich on a terminal, as plain text otherwise.
"""

from __future__ import annotations

import errno
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TextIO

import msgspec
import trio

from ccsa.daemon import snapshot
from ccsa.daemon.snapshot import (
    ClusterStatus,
    CommandStats,
    Counters,
    ParkedEntry,
    StatusSnapshot,
    TopologyStatus,
)
from ccsa.errors import DaemonError
from ccsa.sockaddr import SockAddr, TcpAddr, UnixAddr

__all__ = ["Section", "fetch", "render", "sections", "status_command"]

TIMEOUT = 10.0
MAX_ANSWER = 16 * 1024 * 1024


async def fetch(addr: SockAddr, timeout: float = TIMEOUT) -> StatusSnapshot:
    """The daemon's status snapshot; DaemonError with a one-line reason when it cannot."""
    where = str(addr)
    try:
        with trio.fail_after(timeout):
            if isinstance(addr, UnixAddr):
                stream: trio.SocketStream = await trio.open_unix_socket(addr.path)
            else:
                assert isinstance(addr, TcpAddr)
                stream = await trio.open_tcp_stream(addr.connect_host, addr.port)
            async with stream:
                await stream.send_all(b'{"ccsa": "status"}')
                await stream.send_eof()
                data = bytearray()
                while chunk := await stream.receive_some(65536):
                    data += chunk
                    if len(data) > MAX_ANSWER:
                        raise DaemonError(f"status from {where}: answer larger than 16 MiB")
    except trio.TooSlowError:
        raise DaemonError(
            f"status: the daemon at {where} did not answer in {timeout:g} s"
        ) from None
    except (FileNotFoundError, ConnectionRefusedError):
        raise DaemonError(
            f"status: no daemon is listening at {where} (is the service running? "
            "systemctl status cc-slurm-adapter)"
        ) from None
    except PermissionError:
        raise DaemonError(
            f"status: permission denied on {where}: run as the service user or a member of "
            "its group"
        ) from None
    except OSError as exc:
        if exc.errno == errno.ENOENT:
            raise DaemonError(f"status: no daemon is listening at {where}") from None
        raise DaemonError(f"status: cannot reach the daemon at {where}: {exc}") from None
    except trio.BrokenResourceError as exc:
        raise DaemonError(f"status: connection to {where} broke: {exc}") from None
    if not data.strip():
        raise DaemonError(
            f"status: the daemon at {where} closed the connection without an answer "
            "(an older ccsa, or another program on that socket?)"
        )
    try:
        return snapshot.decode(bytes(data))
    except msgspec.ValidationError as exc:
        raise DaemonError(f"status: unexpected answer from {where}: {exc}") from None
    except msgspec.DecodeError as exc:
        raise DaemonError(f"status: undecodable answer from {where}: {exc}") from None


@dataclass(frozen=True, slots=True)
class Section:
    """One table: title, column headers, rows of text."""

    title: str
    headers: tuple[str, ...]
    rows: list[tuple[str, ...]]


def _when(epoch: float | None, now: float) -> str:
    if epoch is None:
        return "-"
    text = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(epoch))
    return f"{text} ({_ago(now - epoch)})"


def _ago(seconds: float) -> str:
    s = int(seconds)
    if s < 0:
        return "in the future"
    if s < 120:
        return f"{s} s ago"
    if s < 7200:
        return f"{s // 60} min ago"
    if s < 172800:
        return f"{s // 3600} h ago"
    return f"{s // 86400} d ago"


def _cluster_row(name: str, info: ClusterStatus, now: float) -> tuple[str, ...]:
    error = f"{info.last_error} ({_when(info.last_error_at, now)})" if info.last_error else "-"
    waiting = f"{info.waiting} (oldest {_when(info.waiting_since, now)})" if info.waiting else "0"
    return (name, _when(info.watermark, now), _when(info.last_sync, now), error, waiting)


def _lag_row(name: str, info: ClusterStatus, now: float) -> tuple[str, ...]:
    off = info.slurm_clock_offset
    clock = "-" if off is None else ("in step" if off == 0 else f"{off:+.0f} s")
    queue = "-" if info.dbd_queue is None else str(info.dbd_queue)
    held = "-"
    if info.held_for_job is not None:
        held = f"job {info.held_for_job} (started {_when(info.held_at, now)})"
    return (name, clock, queue, held)


def _parked_row(p: ParkedEntry, now: float) -> tuple[str, ...]:
    status = str(p.status) if p.status is not None else "-"
    return (str(p.id), p.cluster, str(p.job_id), p.kind, status, p.reason,
            _when(p.parked_at, now))  # fmt: skip


def _command_row(cmd: str, st: CommandStats) -> tuple[str, ...]:
    avg = st.total_latency / st.count if st.count else 0.0
    return (cmd, str(st.count), str(st.errors), str(st.timeouts), str(st.deferred),
            f"{avg:.3f}", f"{st.last_latency:.3f}", f"{st.max_latency:.3f}")  # fmt: skip


def _counter_rows(counters: Counters) -> list[tuple[str, ...]]:
    """Non-zero counters; a labelled one without labels (no rejection yet) is a zero too."""
    rows: list[tuple[str, ...]] = []
    for key, value in counters.items():
        if isinstance(value, dict):
            if value:
                rows.append((key, ", ".join(f"{k}: {v}" for k, v in value.items())))
        elif value:
            rows.append((key, str(value)))
    return rows


def _waiting_sections(snap: StatusSnapshot, now: float) -> list[Section]:
    """A blocked channel (401/403, a proxy's page, NATS down) and the oldest waiting row."""
    out: list[Section] = []
    blocked = [(name, ch) for name, ch in sorted(snap.channels.items()) if ch.problem]
    if blocked:
        out.append(
            Section(
                "BLOCKED channels (every request refused; retried with backoff)",
                ("channel", "since", "answers", "paused", "problem"),
                [
                    (
                        name.upper(),
                        _when(ch.blocked_since, now),
                        str(ch.blocked_answers),
                        f"{ch.paused_for:.0f} s",
                        ch.problem or "",
                    )
                    for name, ch in blocked
                ],
            )
        )
    w = snap.oldest_waiting
    if w is not None:
        out.append(
            Section(
                "oldest waiting delivery",
                ("cluster", "job", "kind", "queued", "attempts", "last answer"),
                [
                    (
                        w.cluster,
                        str(w.job_id),
                        w.kind,
                        _when(w.queued_at, now),
                        str(w.attempts),
                        " ".join((w.last_error or "-").split()),
                    )
                ],
            )
        )
    return out


def _topology_sections(topo: TopologyStatus | None, now: float) -> list[Section]:
    """Where hwthread and GPU ids come from, per cluster (docs/resources.md)."""
    if topo is None:
        return []
    origin = topo.origin or "none"
    if topo.fetched_at is not None:
        origin += f", fetched {_when(topo.fetched_at, now)}"
    rows: list[tuple[str, ...]] = []
    for cluster in sorted(set(topo.hosts) | set(topo.gpus)):
        hw = ", ".join(f"{n} {src}" for src, n in sorted(topo.hosts.get(cluster, {}).items()))
        gpu = ", ".join(f"{n} {src}" for src, n in sorted(topo.gpus.get(cluster, {}).items()))
        rows.append((cluster, hw or "-", gpu or "-"))
    out = [
        Section(
            f"cluster topology ({origin}): hosts by the source of their ids",
            ("cluster", "hwthreads from", "GPU ids from"),
            rows,
        )
    ]
    notes: list[tuple[str, ...]] = [("error", topo.last_error)] if topo.last_error else []
    notes += [("unusable", p) for p in topo.problems]
    notes += [("shape differs", m) for m in topo.mismatches]
    if notes:
        out.append(Section("cluster topology problems", ("what", "detail"), notes))
    return out


def sections(snap: StatusSnapshot, now: float) -> list[Section]:
    """The snapshot as tables (pure)."""
    up = _ago(now - snap.started_at).replace(" ago", "") if snap.started_at is not None else "?"
    pid = str(snap.pid) if snap.pid is not None else "?"
    listen = ", ".join(snap.prep_listen) or "-"
    out = [
        Section(
            "daemon", ("version", "pid", "up", "PrEp socket"), [(snap.version, pid, up, listen)]
        ),
        Section(
            "clusters (times UTC)",
            ("cluster", "watermark", "last successful sync", "last error", "jobs waiting"),
            [_cluster_row(name, info, now) for name, info in sorted(snap.clusters.items())],
        ),
        Section(
            "delivery",
            ("outbox", "in flight", "waiting retry", "REST paused", "parked", "PrEp pending"),
            [
                (
                    str(snap.outbox),
                    str(snap.in_flight),
                    str(snap.waiting_retry),
                    f"{snap.rest_paused_for:g} s",
                    str(snap.parked),
                    str(snap.prep_pending),
                )
            ],
        ),
    ]
    out += _waiting_sections(snap, now)
    lag = [(n, i) for n, i in sorted(snap.clusters.items()) if i.slurm_clock_offset is not None
           or i.held_for_job is not None]  # fmt: skip
    if lag:
        out.append(
            Section(
                "Slurm clock and slurmdbd (sdiag; the watermark waits for jobs sacct lacks)",
                ("cluster", "slurmctld clock", "DBD agent queue", "watermark waits for"),
                [_lag_row(name, info, now) for name, info in lag],
            )
        )
    bad: list[tuple[str, ...]] = [
        (n, line) for n, i in sorted(snap.clusters.items()) for line in i.undecodable
    ]
    if bad:
        out.append(
            Section(
                "records of the last poll that do not decode (the rest was synced)",
                ("cluster", "record"),
                bad,
            )
        )
    out += _topology_sections(snap.topology, now)
    if snap.parked_latest:
        out.append(
            Section(
                "parked rejections (latest; re-send with: cc-slurm-adapter redrive --id N)",
                ("id", "cluster", "job", "kind", "status", "reason", "parked"),
                [_parked_row(p, now) for p in snap.parked_latest],
            )
        )
    slurm = snap.slurm_commands
    lim = slurm.limiter
    capacity = "?" if lim.capacity is None else str(lim.capacity)
    out.append(
        Section(
            f"Slurm commands (limiter {lim.in_use}/{capacity} in use, {lim.waiting} waiting)",
            ("command", "runs", "errors", "timeouts", "waited", "avg s", "last s", "max s"),
            [_command_row(cmd, st) for cmd, st in sorted(slurm.commands.items())],
        )
    )
    out.append(
        Section(
            "counters since start (zeros left out)",
            ("counter", "value"),
            _counter_rows(snap.counters),
        )
    )
    return out


def render(secs: Sequence[Section], out: TextIO, *, rich: bool | None = None) -> None:
    """Print the tables: rich on a terminal, plain aligned text otherwise."""
    if out.isatty() if rich is None else rich:
        from rich.console import Console
        from rich.markup import escape
        from rich.table import Table

        console = Console(file=out)
        for sec in secs:
            table = Table(title=escape(sec.title), title_justify="left")
            for h in sec.headers:
                table.add_column(h)
            for row in sec.rows:
                table.add_row(*(escape(c) for c in row))
            console.print(table)
        return
    for sec in secs:
        out.write(f"{sec.title}\n")
        rows = [sec.headers, *sec.rows]
        widths = [max(len(r[i]) for r in rows) for i in range(len(sec.headers))]
        for row in rows:
            line = "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True))
            out.write(f"  {line.rstrip()}\n")
        if not sec.rows:
            out.write("  (none)\n")
        out.write("\n")


def status_command(
    *,
    config: str | None = None,
    debug: int = 1,
    json: bool = False,
    timeout: float = TIMEOUT,
) -> int:
    """Ask the running daemon for its state: watermarks, outbox, parked, errors, latency.

    Parameters
    ----------
    config
        Config file (default /etc/cc-slurm-adapter/config.json); prepSockConnectPath is used.
    debug
        Log level 0-5.
    json
        Print the raw status snapshot as JSON.
    timeout
        Seconds to wait for the daemon's answer.
    """
    from ccsa import cli

    cfg = cli.load_config(config, debug)
    try:
        snap = trio.run(fetch, cfg.prep_sock_connect_path, timeout)
    except DaemonError as exc:
        return cli.fail(str(exc), 1)
    if json:
        sys.stdout.write(msgspec.json.format(snapshot.encode(snap)).decode() + "\n")
    else:
        render(sections(snap, time.time()), sys.stdout)
    sys.stdout.flush()
    return 0
