"""Run every Slurm command through one place: one limiter, one timeout policy, TZ=UTC, no shell.

``SlurmRunner.run(cmd, args)`` resolves the binary once (``slurmBinDir``, else ``PATH``, else
``/usr/bin``: slurmctld runs hooks without ``PATH``), runs it with ``trio.run_process`` under a
single ``trio.CapacityLimiter`` and a per-command timeout, and returns stdout;
``SlurmRunner.run_file`` returns stdout as an open unlinked temporary file instead (in
``$TMPDIR``, else ``/tmp``), for answers that are decoded job by job (:mod:`ccsa.slurm.stream`).
The child writes its stdout straight into that file, so an answer never passes through the
daemon's memory in pieces: ``run`` reads it back in one piece of the exact size. On timeout
the child gets SIGTERM, then SIGKILL after a short grace, and ``SlurmTimeout`` is raised only
once it is dead. A non-zero exit raises ``SlurmCommandError`` with the child's stderr; stderr is
read through a bounded buffer so a chatty command cannot grow memory. Per-command counters and
latencies feed metrics and ``status``.

Priority: calls made inside ``with runner.urgent():`` (the hook path's lookups, and every task
they start) go first. A call from anywhere else that has not started yet waits until the urgent
scopes open at its arrival have ended, not for scopes opened later, so a flood of hook events
cannot starve the poll; and never for a scope older than `URGENT_MAX_WAIT`, so a hook lookup
stuck on a hung Slurm command holds the poll up for seconds, not for the command's timeout. A
backlog poll thus pauses between its Slurm calls while a hook lookup runs, instead of sharing
slurmctld/slurmdbd and the CPU with it.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import asdict, dataclass
from functools import partial
from typing import IO, Any

import trio

from ccsa.errors import SlurmCommandError, SlurmTimeout

__all__ = ["CommandStats", "SlurmRunner"]

log = logging.getLogger(__name__)

#: Where Slurm's binaries live on every distribution we know when PATH does not have them.
FALLBACK_BIN_DIR = "/usr/bin"
#: Bytes of stderr kept per command (the rest is read and dropped).
STDERR_LIMIT = 64 * 1024
_READ_SIZE = 65536
#: Longest a call waits for an urgent scope, counted from the scope's opening: a hook lookup
#: takes well under a second; one that takes longer is stuck and must not stall the poll.
URGENT_MAX_WAIT = 2.0
#: True inside `SlurmRunner.urgent` (trio tasks inherit it from the task that starts them).
_URGENT: ContextVar[bool] = ContextVar("ccsa_slurm_urgent", default=False)


@dataclass(slots=True)
class CommandStats:
    """Counters of one Slurm command (by binary name); latencies in seconds of trio time."""

    count: int = 0
    errors: int = 0
    timeouts: int = 0
    total_latency: float = 0.0
    last_latency: float = 0.0
    max_latency: float = 0.0
    #: calls that waited for an urgent scope (`SlurmRunner.urgent`) before starting
    deferred: int = 0


class SlurmRunner:
    """Runs Slurm commands under one capacity limiter with a timeout each.

    ``env`` adds variables to the inherited environment (captured at construction); ``TZ=UTC``
    is always set so that Slurm prints and parses times in UTC.
    """

    def __init__(
        self,
        bin_dir: str = "",
        max_concurrent: int = 10,
        timeout: float = 120.0,
        env: Mapping[str, str] | None = None,
        *,
        kill_grace: float = 2.0,
        stderr_limit: int = STDERR_LIMIT,
        urgent_max_wait: float = URGENT_MAX_WAIT,
    ) -> None:
        if max_concurrent < 1:
            raise ValueError(f"slurmMaxConcurrent must be >= 1, got {max_concurrent}")
        if timeout <= 0:
            raise ValueError(f"slurmCommandTimeout must be > 0, got {timeout}")
        self.bin_dir = bin_dir
        self.timeout = timeout
        self.kill_grace = kill_grace
        self.stderr_limit = stderr_limit
        self.limiter = trio.CapacityLimiter(max_concurrent)
        self._env = {**os.environ, **(env or {}), "TZ": "UTC"}
        self._paths: dict[str, str] = {}
        self._stats: dict[str, CommandStats] = {}
        self.urgent_max_wait = urgent_max_wait
        # open urgent scopes: (opened at, set when closed)
        self._urgent: dict[int, tuple[float, trio.Event]] = {}
        self._urgent_seq = 0

    @contextmanager
    def urgent(self) -> Iterator[None]:
        """Slurm calls inside this scope (this task and the tasks it starts) go first.

        Other calls that have not started yet wait until the scopes open at their arrival have
        closed, at most `urgent_max_wait` after each scope opened (see the module docstring).
        Scopes may nest and overlap.
        """
        token = _URGENT.set(True)
        self._urgent_seq += 1
        key = self._urgent_seq
        closed = trio.Event()
        self._urgent[key] = (trio.current_time(), closed)
        try:
            yield
        finally:
            del self._urgent[key]
            closed.set()
            _URGENT.reset(token)

    def resolve(self, cmd: str) -> str:
        """Absolute path of Slurm binary ``cmd`` (cached); SlurmCommandError if not found."""
        path = self._paths.get(cmd)
        if path is not None:
            return path
        if self.bin_dir:
            candidate = os.path.join(self.bin_dir, cmd)
            found = candidate if _executable(candidate) else None
            searched = f"slurmBinDir {self.bin_dir!r}"
        else:
            found = shutil.which(cmd, path=self._env.get("PATH", ""))
            if found is None:
                fallback = os.path.join(FALLBACK_BIN_DIR, cmd)
                found = fallback if _executable(fallback) else None
            searched = f"PATH {self._env.get('PATH', '')!r} and {FALLBACK_BIN_DIR}"
        if found is None:
            raise SlurmCommandError(
                [cmd],
                None,
                f"{cmd}: no executable found in {searched}; "
                "set slurmBinDir in the config to the directory holding Slurm's commands",
            )
        path = os.path.abspath(found)
        self._paths[cmd] = path
        return path

    async def run(self, cmd: str, args: Sequence[str], *, timeout: float | None = None) -> bytes:
        """Run ``cmd args...`` and return its stdout; raise SlurmCommandError / SlurmTimeout."""
        with await self.run_file(cmd, args, timeout=timeout) as out:
            return out.read()

    async def run_file(
        self, cmd: str, args: Sequence[str], *, timeout: float | None = None
    ) -> IO[bytes]:
        """Run ``cmd args...``; its stdout as an open temporary file at offset 0 (the caller
        closes it, which deletes it). Raises SlurmCommandError / SlurmTimeout."""
        limit = self.timeout if timeout is None else timeout
        stats = self._stats.setdefault(cmd, CommandStats())
        try:
            argv = [self.resolve(cmd), *args]
        except SlurmCommandError:
            stats.count += 1
            stats.errors += 1
            raise
        if self._urgent and not _URGENT.get():
            stats.deferred += 1
            for opened, closed in list(self._urgent.values()):  # open now, not later ones
                with trio.move_on_at(opened + self.urgent_max_wait):
                    await closed.wait()
        async with self.limiter:
            started = trio.current_time()
            stdout = tempfile.TemporaryFile(prefix="ccsa-slurm-")  # noqa: SIM115 (returned)
            try:
                returncode, stderr = await self._run_with_timeout(argv, limit, stdout)
            except SlurmTimeout:
                stdout.close()
                stats.timeouts += 1
                stats.errors += 1
                raise
            except SlurmCommandError:
                stdout.close()
                stats.errors += 1
                raise
            except BaseException:
                stdout.close()
                raise
            finally:
                elapsed = trio.current_time() - started
                stats.count += 1
                stats.total_latency += elapsed
                stats.last_latency = elapsed
                stats.max_latency = max(stats.max_latency, elapsed)
        size = stdout.seek(0, os.SEEK_END)
        stdout.seek(0)
        if returncode != 0:
            stdout.close()
            stats.errors += 1
            raise SlurmCommandError(argv, returncode, stderr)
        log.debug("%s: %d bytes in %.3f s", " ".join(argv), size, elapsed)
        return stdout

    async def _run_with_timeout(
        self, argv: list[str], limit: float, stdout: IO[bytes]
    ) -> tuple[int, str]:
        stderr_buf = bytearray()
        try:
            with trio.fail_after(limit):
                async with trio.open_nursery() as nursery:
                    proc: trio.Process = await nursery.start(
                        partial(
                            trio.run_process,
                            argv,
                            stdin=subprocess.DEVNULL,
                            stdout=stdout,
                            stderr=subprocess.PIPE,
                            check=False,
                            env=self._env,
                            deliver_cancel=self._term_then_kill,
                        )
                    )
                    assert proc.stderr is not None
                    nursery.start_soon(_read_bounded, proc.stderr, stderr_buf, self.stderr_limit)
        except trio.TooSlowError as exc:
            raise SlurmTimeout(argv, limit, _text(stderr_buf)) from exc
        except ExceptionGroup as group:
            # The nursery wraps a failed exec (ENOEXEC, EACCES...) in a group.
            oserror = _only_oserror(group)
            if oserror is None:
                raise
            raise SlurmCommandError(argv, None, str(oserror)) from oserror
        except OSError as exc:
            raise SlurmCommandError(argv, None, str(exc)) from exc
        returncode = proc.returncode
        assert returncode is not None
        return returncode, _text(stderr_buf)

    async def _term_then_kill(self, proc: trio.Process) -> None:
        """deliver_cancel: SIGTERM, then SIGKILL after the grace (cancelled once it exits)."""
        proc.terminate()
        await trio.sleep(self.kill_grace)
        log.warning("%s ignored SIGTERM for %g s: killing it", proc.args, self.kill_grace)
        proc.kill()

    def stats(self) -> dict[str, Any]:
        """Plain-dict snapshot: per-command counters and the limiter's occupancy."""
        lim = self.limiter.statistics()
        return {
            "commands": {cmd: asdict(s) for cmd, s in sorted(self._stats.items())},
            "limiter": {
                "capacity": lim.total_tokens,
                "in_use": lim.borrowed_tokens,
                "waiting": lim.tasks_waiting,
                "urgent_scopes": len(self._urgent),
            },
        }


def _only_oserror(group: BaseExceptionGroup[BaseException]) -> OSError | None:
    """The first OSError of a group that holds nothing else, else None."""
    matched, rest = group.split(OSError)
    if matched is None or rest is not None:
        return None
    leaf: BaseException = matched
    while isinstance(leaf, BaseExceptionGroup):
        leaf = leaf.exceptions[0]
    return leaf if isinstance(leaf, OSError) else None


def _executable(path: str) -> bool:
    return os.path.isfile(path) and os.access(path, os.X_OK)


def _text(data: bytes | bytearray) -> str:
    return bytes(data).decode("utf-8", errors="replace")


async def _read_bounded(stream: trio.abc.ReceiveStream, buf: bytearray, limit: int) -> None:
    async with stream:
        while data := await stream.receive_some(_READ_SIZE):
            room = limit - len(buf)
            if room > 0:
                buf += data[:room]
