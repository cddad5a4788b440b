"""`cc-slurm-adapter status`: ask the running daemon over its PrEp socket and print the answer.

Sends ``{"ccsa": "status"}`` to ``prepSockConnectPath`` (the daemon answers with its status
snapshot, see ``Daemon.status``) and prints it as readable tables: watermarks and last sync per
cluster, outbox depth, parked rejections, last errors, Slurm command latency, counters.
``--json`` prints the raw snapshot. `fetch` is the I/O, `sections` (pure) turns a snapshot into
tables, `render` prints them with rich on a terminal and as plain aligned text otherwise.
"""

from __future__ import annotations

import errno
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TextIO

import msgspec
import trio

from ccsa.errors import DaemonError
from ccsa.sockaddr import SockAddr, TcpAddr, UnixAddr

__all__ = ["Section", "fetch", "render", "sections", "status_command"]

TIMEOUT = 10.0
MAX_ANSWER = 16 * 1024 * 1024


async def fetch(addr: SockAddr, timeout: float = TIMEOUT) -> dict[str, Any]:
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
        value = msgspec.json.decode(bytes(data))
    except msgspec.DecodeError as exc:
        raise DaemonError(f"status: undecodable answer from {where}: {exc}") from None
    if not isinstance(value, dict):
        raise DaemonError(f"status: unexpected answer from {where}: not a JSON object")
    return value


@dataclass(frozen=True, slots=True)
class Section:
    """One table: title, column headers, rows of text."""

    title: str
    headers: tuple[str, ...]
    rows: list[tuple[str, ...]]


def _when(epoch: Any, now: float) -> str:
    if not isinstance(epoch, int | float):
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


def sections(snap: Mapping[str, Any], now: float) -> list[Section]:
    """The snapshot as tables (pure)."""
    out: list[Section] = []
    started = snap.get("started_at")
    up = _ago(now - started).replace(" ago", "") if isinstance(started, int | float) else "?"
    out.append(
        Section(
            "daemon",
            ("version", "pid", "up", "PrEp socket"),
            [
                (
                    str(snap.get("version", "?")),
                    str(snap.get("pid", "?")),
                    up,
                    ", ".join(snap.get("prep_listen") or []) or "-",
                )
            ],
        )
    )
    clusters = snap.get("clusters") or {}
    out.append(
        Section(
            "clusters (times UTC)",
            ("cluster", "watermark", "last successful sync", "last error"),
            [
                (
                    name,
                    _when(info.get("watermark"), now),
                    _when(info.get("last_sync"), now),
                    (
                        f"{info['last_error']} ({_when(info.get('last_error_at'), now)})"
                        if info.get("last_error")
                        else "-"
                    ),
                )
                for name, info in sorted(clusters.items())
            ],
        )
    )
    out.append(
        Section(
            "delivery",
            ("outbox", "in flight", "waiting retry", "REST paused", "parked", "PrEp pending"),
            [
                (
                    str(snap.get("outbox", 0)),
                    str(snap.get("in_flight", 0)),
                    str(snap.get("waiting_retry", 0)),
                    f"{snap.get('rest_paused_for', 0):g} s",
                    str(snap.get("parked", 0)),
                    str(snap.get("prep_pending", 0)),
                )
            ],
        )
    )
    parked = snap.get("parked_latest") or []
    if parked:
        out.append(
            Section(
                "parked rejections (latest; re-send with: cc-slurm-adapter redrive --id N)",
                ("id", "cluster", "job", "kind", "status", "reason", "parked"),
                [
                    (
                        str(p.get("id")),
                        str(p.get("cluster")),
                        str(p.get("job_id")),
                        str(p.get("kind")),
                        str(p.get("status") if p.get("status") is not None else "-"),
                        str(p.get("reason")),
                        _when(p.get("parked_at"), now),
                    )
                    for p in parked
                ],
            )
        )
    slurm = snap.get("slurm_commands") or {}
    rows: list[tuple[str, ...]] = []
    for cmd, st in sorted((slurm.get("commands") or {}).items()):
        count = int(st.get("count") or 0)
        avg = (st.get("total_latency") or 0.0) / count if count else 0.0
        rows.append(
            (
                cmd,
                str(count),
                str(st.get("errors", 0)),
                str(st.get("timeouts", 0)),
                str(st.get("deferred", 0)),
                f"{avg:.3f}",
                f"{st.get('last_latency', 0.0):.3f}",
                f"{st.get('max_latency', 0.0):.3f}",
            )
        )
    limiter = slurm.get("limiter") or {}
    out.append(
        Section(
            f"Slurm commands (limiter {limiter.get('in_use', 0)}/{limiter.get('capacity', '?')} "
            f"in use, {limiter.get('waiting', 0)} waiting)",
            ("command", "runs", "errors", "timeouts", "waited", "avg s", "last s", "max s"),
            rows,
        )
    )
    counters = snap.get("counters") or {}
    flat: list[tuple[str, ...]] = []
    for key, value in counters.items():
        if isinstance(value, dict):
            text = ", ".join(f"{k}: {v}" for k, v in value.items()) or "-"
            flat.append((key, text))
        elif value:
            flat.append((key, str(value)))
    out.append(Section("counters since start (zeros left out)", ("counter", "value"), flat))
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
        sys.stdout.write(msgspec.json.format(msgspec.json.encode(snap)).decode() + "\n")
    else:
        render(sections(snap, time.time()), sys.stdout)
    sys.stdout.flush()
    return 0
