"""The daemon's PID file: taken at start, refused while another adapter lives, removed at exit.

`pid_file(path)` is a context manager. A PID file naming a dead process, or a live process that
is not an adapter (the PID was reused after a crash), is stale and replaced; the file is written
atomically (temporary file + rename) and removed on every way out of the ``with`` block, but only
while it still names this process.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator

from ccsa.errors import DaemonError

__all__ = ["pid_file"]

log = logging.getLogger(__name__)

#: Process names that identify a running adapter in a PID file.
_OUR_NAMES = ("cc-slurm-adapter", "ccsa")


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return fh.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextlib.contextmanager
def pid_file(path: str) -> Iterator[None]:
    """Hold the PID file while the daemon runs; refuse if another adapter is alive."""
    try:
        with open(path, encoding="ascii", errors="replace") as fh:
            text = fh.read().strip()
    except FileNotFoundError:
        text = ""
    except OSError as exc:
        raise DaemonError(f"PID file {path}: cannot read: {exc.strerror}") from exc
    if text.isdigit() and int(text) != os.getpid():
        other = int(text)
        if _alive(other) and any(n in _cmdline(other) for n in _OUR_NAMES):
            raise DaemonError(
                f"PID file {path}: another cc-slurm-adapter daemon is running as PID {other}"
            )
        log.warning("PID file %s: replacing stale entry (PID %s is not running an adapter)",
                    path, other)  # fmt: skip
    tmp = f"{path}.{os.getpid()}.tmp"
    try:
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        with open(tmp, "w", encoding="ascii") as fh:
            fh.write(f"{os.getpid()}\n")
        os.replace(tmp, path)
    except OSError as exc:
        raise DaemonError(f"PID file {path}: cannot write: {exc.strerror}") from exc
    try:
        yield
    finally:
        try:
            with open(path, encoding="ascii") as fh:
                mine = fh.read().strip() == str(os.getpid())
            if mine:
                os.unlink(path)
        except OSError:
            pass
