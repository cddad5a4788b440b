"""The PrEp listener: hook messages in on a Unix/TCP socket, coalesced into batched lookups.

Each connection carries ONE JSON object of ``SLURM_*`` values from the Prolog/EpilogSlurmctld
hook (or ``{"ccsa": "status"}``, answered with the daemon's status snapshot). Every connection is
bounded: at most `MAX_MESSAGE` bytes, `READ_TIMEOUT` seconds, `MAX_CONNECTIONS` at once; garbage
is logged in one line naming the peer and dropped. Events go into a bounded `Coalescer`: the
first event arms a ``slurmQueryDelay`` timer that later events do not re-arm (a flood cannot
postpone it); when it fires the queued ids are looked up per cluster in one batch, and ids Slurm
does not show yet are retried up to ``slurmMaxRetries`` times, then left to the poll.

The Unix socket is created at mode 0660 *before* anyone can reach it: it is bound under a
temporary name, chmodded, put in listening state and only then renamed onto the configured path
(a rename is atomic), so there is no chmod-after-listen window (upstream chmods 0666 after
listen). trio's own `SocketListener` serves it (trio has no unix-listener helper, trio#279).
"""

from __future__ import annotations

import errno
import logging
import os
import socket
import stat
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import msgspec
import trio

from ccsa.daemon.snapshot import StatusSnapshot
from ccsa.daemon.stats import Stats
from ccsa.daemon.sync import LookupResult
from ccsa.errors import DaemonError, SlurmError
from ccsa.sockaddr import SockAddr, TcpAddr, UnixAddr

log = logging.getLogger(__name__)

#: A hook message is a few hundred bytes of SLURM_* values; 64 KiB leaves room for long node
#: lists and still bounds memory per connection.
MAX_MESSAGE = 64 * 1024
#: The hook sends at once and closes; a peer slower than this is stuck or hostile.
READ_TIMEOUT = 2.0
#: Connections handled at once; more are closed immediately (the poll catches up anyway).
MAX_CONNECTIONS = 256
#: Jobs waiting for a lookup; further events are dropped with a warning (the poll has them).
MAX_PENDING = 20_000

Context = Literal["prolog", "epilog", ""]
_CONTEXTS: dict[str, Context] = {"prolog_slurmctld": "prolog", "epilog_slurmctld": "epilog"}


class PrepMessageError(ValueError):
    """A hook message that is not usable (the text says why)."""


@dataclass(frozen=True, slots=True)
class PrepEvent:
    """A job start (prolog) or end (epilog) reported by the hook."""

    cluster: str
    job_id: int
    context: Context


@dataclass(frozen=True, slots=True)
class StatusRequest:
    """``{"ccsa": "status"}``: answer with the status snapshot on the same connection."""


_decoder = msgspec.json.Decoder(dict[str, Any])


def parse_message(data: bytes) -> PrepEvent | StatusRequest:
    """Parse one hook message (pure). Raises PrepMessageError with a one-line reason."""
    try:
        obj = _decoder.decode(data)
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError) as exc:
        # msgspec raises UnicodeDecodeError for invalid UTF-8 in a string and RecursionError
        # for deep nesting: neither is a DecodeError, and either would crash the listener.
        raise PrepMessageError(f"not a JSON object ({exc})") from None
    if obj.get("ccsa") == "status":
        return StatusRequest()
    raw_id = obj.get("SLURM_JOB_ID")
    text = str(raw_id).strip() if isinstance(raw_id, str | int) else ""
    # ASCII and at most 19 digits: int() of a 5000-digit string raises ValueError (and '²' is
    # a digit to isdigit() but not to int()); Slurm job ids are 32-bit anyway.
    if not (text.isascii() and text.isdigit() and len(text) <= 19):
        raise PrepMessageError(f"SLURM_JOB_ID is missing or not a number ({raw_id!r:.40})")
    cluster = obj.get("SLURM_CLUSTER_NAME")
    if not isinstance(cluster, str) or not cluster.strip():
        raise PrepMessageError(f"job {raw_id}: SLURM_CLUSTER_NAME is missing")
    raw_ctx = obj.get("SLURM_SCRIPT_CONTEXT", "")
    if raw_ctx and raw_ctx not in _CONTEXTS:
        raise PrepMessageError(
            f"job {raw_id}: SLURM_SCRIPT_CONTEXT {raw_ctx!r} is not prolog_slurmctld or "
            "epilog_slurmctld"
        )
    return PrepEvent(cluster.strip(), int(text), _CONTEXTS.get(raw_ctx, ""))


# --- coalescing ----------------------------------------------------------------------------


class Lookup(Protocol):
    """Looks a batch of one cluster's job ids up and queues what it found
    (`ccsa.daemon.sync.Syncer.lookup`); raises SlurmError when Slurm did not answer."""

    def __call__(self, cluster: str, ids: Collection[int], /) -> Awaitable[LookupResult]: ...


@dataclass(slots=True)
class _Pending:
    context: Context
    tries: int = 0


class Coalescer:
    """Collects hook events and looks them up in batches after ``delay`` seconds."""

    def __init__(
        self,
        lookup: Lookup,
        *,
        delay: float,
        max_retries: int,
        clusters: Collection[str] | None = None,
        max_pending: int = MAX_PENDING,
        stats: Stats | None = None,
    ) -> None:
        self.lookup = lookup
        self.delay = delay
        self.max_retries = max(0, max_retries)
        self.clusters = set(clusters) if clusters is not None else None
        self.max_pending = max_pending
        self.stats = stats if stats is not None else Stats()
        self._pending: dict[str, dict[int, _Pending]] = {}
        self._count = 0
        self._armed_at: float | None = None
        self._wake = trio.Event()
        self.batches = 0

    @property
    def pending(self) -> int:
        return self._count

    def put(self, event: PrepEvent) -> bool:
        """Queue an event (never blocks). False when dropped (unknown cluster, queue full)."""
        if self.clusters is not None and event.cluster not in self.clusters:
            log.warning("hook event for job %d of cluster %r ignored: not a cluster of this "
                        "Slurm (%s)", event.job_id, event.cluster,
                        ", ".join(sorted(self.clusters)))  # fmt: skip
            self.stats.prep_dropped += 1
            return False
        jobs = self._pending.setdefault(event.cluster, {})
        old = jobs.get(event.job_id)
        if old is None:
            if self._count >= self.max_pending:
                self.stats.prep_dropped += 1
                log.warning("hook queue full (%d jobs): job %d of %s left to the next poll",
                            self.max_pending, event.job_id, event.cluster)  # fmt: skip
                return False
            jobs[event.job_id] = _Pending(event.context)
            self._count += 1
        elif event.context == "epilog":
            old.context = "epilog"  # the job ended meanwhile: now wait for its end
            old.tries = 0
        self.stats.prep_events += 1
        self._arm()
        return True

    def _arm(self) -> None:
        if self._armed_at is None:
            self._armed_at = trio.current_time()
            self._wake.set()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        while True:
            await self._wake.wait()
            self._wake = trio.Event()
            assert self._armed_at is not None
            # Armed by the FIRST event; later events never move this deadline.
            await trio.sleep_until(self._armed_at + self.delay)
            batch, self._pending, self._count = self._pending, {}, 0
            self._armed_at = None
            self.batches += 1
            async with trio.open_nursery() as nursery:
                for cluster, jobs in batch.items():
                    nursery.start_soon(self._resolve, cluster, jobs)

    async def _resolve(self, cluster: str, jobs: dict[int, _Pending]) -> None:
        try:
            answer = await self.lookup(cluster, sorted(jobs))
            started, finished = answer.started, answer.finished
        except SlurmError as exc:
            log.warning("%s: hook lookup of %d jobs failed (will retry): %s", cluster, len(jobs),
                        exc)  # fmt: skip
            started = finished = frozenset()
        for job_id, pending in jobs.items():
            done = job_id in finished if pending.context == "epilog" else job_id in started
            if done:
                continue
            pending.tries += 1
            if pending.tries > self.max_retries:
                self.stats.prep_given_up += 1
                log.info("%s: job %d not visible in Slurm after %d lookups; left to the poll",
                         cluster, job_id, pending.tries)  # fmt: skip
                continue
            current = self._pending.setdefault(cluster, {})
            newer = current.get(job_id)
            if newer is None:
                current[job_id] = pending
                self._count += 1
            else:
                newer.tries = max(newer.tries, pending.tries)
            self._arm()


# --- the socket ----------------------------------------------------------------------------


def _answering(path: str) -> bool:
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(1.0)
    try:
        probe.connect(path)
    except OSError:
        return False
    finally:
        probe.close()
    return True


def bind_unix(path: str, mode: int = 0o660) -> socket.socket:
    """A listening Unix socket at `path` with `mode`, never reachable with another mode.

    Raises:
        DaemonError: another process answers on `path`, or the socket cannot be created.
    """
    try:
        mode_now = os.lstat(path).st_mode
    except FileNotFoundError:
        mode_now = None
    except OSError as exc:
        raise DaemonError(f"PrEp socket {path}: {exc.strerror or exc}") from exc
    if mode_now is not None and not stat.S_ISSOCK(mode_now):
        raise DaemonError(f"PrEp socket {path}: exists and is not a socket; refusing to replace it")
    if mode_now is not None and _answering(path):
        raise DaemonError(f"PrEp socket {path}: another daemon is answering on it; stop it first")
    tmp = f"{path}.{os.getpid()}.tmp"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        sock.bind(tmp)
        os.chmod(tmp, mode)
        sock.listen(socket.SOMAXCONN)
        os.rename(tmp, path)  # atomic; replaces a stale socket file
    except OSError as exc:
        sock.close()
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise DaemonError(f"PrEp socket {path}: cannot listen: {exc.strerror or exc}") from exc
    return sock


class PrepServer:
    """Accepts hook connections and hands events to `on_event`; answers status requests."""

    def __init__(
        self,
        on_event: Callable[[PrepEvent], object],
        status: Callable[[], StatusSnapshot] | None = None,
        *,
        stats: Stats | None = None,
        max_message: int = MAX_MESSAGE,
        read_timeout: float = READ_TIMEOUT,
        max_connections: int = MAX_CONNECTIONS,
    ) -> None:
        self.on_event = on_event
        self.status = status
        self.stats = stats if stats is not None else Stats()
        self.max_message = max_message
        self.read_timeout = read_timeout
        self._slots = trio.Semaphore(max_connections)
        self.bound: list[str] = []

    async def serve(
        self,
        addr: SockAddr,
        *,
        task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Bind `addr`, report the bound addresses, serve until cancelled; removes the socket."""
        unix_path: str | None = None
        if isinstance(addr, UnixAddr):
            raw = bind_unix(addr.path)
            unix_path = addr.path
            listeners: list[trio.SocketListener] = [
                trio.SocketListener(trio.socket.from_stdlib_socket(raw))
            ]
            self.bound = [addr.path]
        elif isinstance(addr, TcpAddr):
            try:
                listeners = await trio.open_tcp_listeners(addr.port, host=addr.host or None)
            except OSError as exc:
                raise DaemonError(f"PrEp socket {addr}: cannot listen: {exc.strerror}") from exc
            self.bound = [_sockname(ln.socket.getsockname()) for ln in listeners]
        else:  # pragma: no cover - SockAddr has two forms
            raise DaemonError(f"PrEp socket {addr!r}: unsupported address")
        try:
            task_status.started(self.bound)
            await trio.serve_listeners(self._handle_stream, listeners)
        finally:
            if unix_path is not None:
                _remove_socket(unix_path)

    async def _handle_stream(self, stream: trio.SocketStream) -> None:
        peer = _peer(stream)
        try:
            self._slots.acquire_nowait()
        except trio.WouldBlock:
            self.stats.prep_dropped += 1
            log.warning("PrEp %s: too many connections at once; closed", peer)
            await stream.aclose()
            return
        try:
            await self.handle(stream, peer)
        finally:
            self._slots.release()

    async def handle(self, stream: trio.abc.Stream, peer: str) -> None:
        """One connection: read one message (bounded), act on it, close."""
        async with stream:
            data = bytearray()
            with trio.move_on_after(self.read_timeout) as scope:
                try:
                    while len(data) <= self.max_message:
                        chunk = await stream.receive_some(65536)
                        if not chunk:
                            break
                        data += chunk
                except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                    self._garbage(peer, f"connection broken ({exc})")
                    return
            if scope.cancelled_caught:
                self._garbage(peer, f"no complete message within {self.read_timeout:g} s")
                return
            if len(data) > self.max_message:
                self._garbage(peer, f"message larger than {self.max_message} bytes")
                return
            try:
                msg = parse_message(bytes(data))
            except PrepMessageError as exc:
                self._garbage(peer, str(exc))
                return
            if isinstance(msg, StatusRequest):
                body = msgspec.json.encode(self.status() if self.status else StatusSnapshot())
                with trio.move_on_after(self.read_timeout):
                    try:
                        await stream.send_all(body + b"\n")
                    except (trio.BrokenResourceError, trio.ClosedResourceError):
                        pass
                return
            log.debug("PrEp %s: %s job %d on %s", peer, msg.context or "event", msg.job_id,
                      msg.cluster)  # fmt: skip
            self.on_event(msg)

    def _garbage(self, peer: str, problem: str) -> None:
        self.stats.prep_garbage += 1
        log.warning("PrEp %s: dropped message: %s", peer, problem)


def _sockname(name: Any) -> str:
    if isinstance(name, tuple):
        host, port = name[0], name[1]
        return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"
    return str(name)


def _peer(stream: trio.SocketStream) -> str:
    try:
        name = stream.socket.getpeername()
    except OSError:
        return "peer ?"
    if isinstance(name, tuple):
        return f"peer {_sockname(name)}"
    try:
        creds = stream.socket.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12)
        pid, uid, _gid = (int.from_bytes(creds[i : i + 4], "little") for i in (0, 4, 8))
        return f"peer pid {pid} uid {uid}"
    except (OSError, AttributeError):
        return "unix peer"


def _remove_socket(path: str) -> None:
    try:
        os.unlink(path)
    except OSError as exc:
        if exc.errno != errno.ENOENT:
            log.warning("cannot remove PrEp socket %s: %s", path, exc.strerror)
