"""systemd notification protocol (sd_notify): READY=1, WATCHDOG=1, STATUS=..., STOPPING=1.

Written against the protocol itself (one datagram per message to ``$NOTIFY_SOCKET``) instead of a
library: the protocol is four lines of socket code, and the candidate packages (``sdnotify``,
``systemd-python``) are either unmaintained or need libsystemd headers at install time.
Outside systemd (no ``NOTIFY_SOCKET``) every call is a cheap no-op.
"""

from __future__ import annotations

import logging
import os
import socket

log = logging.getLogger(__name__)


class Notifier:
    """Sends sd_notify datagrams; a no-op when not started by systemd with ``Type=notify``."""

    def __init__(self, environ: dict[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        self._address = _socket_address(env.get("NOTIFY_SOCKET", ""))
        self._watchdog_usec = _watchdog_usec(env)
        self._sock: socket.socket | None = None
        self._last_status = ""

    @property
    def enabled(self) -> bool:
        return self._address is not None

    @property
    def watchdog_interval(self) -> float | None:
        """Seconds between WATCHDOG=1 pings (half of WatchdogSec), or None when not asked for."""
        if self._watchdog_usec is None:
            return None
        return self._watchdog_usec / 2_000_000

    def send(self, message: str) -> bool:
        """Send one notification; never raises (a lost notification must not stop the daemon)."""
        if self._address is None:
            return False
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            self._sock.sendto(message.encode(), self._address)
        except OSError as exc:
            log.warning("sd_notify to %s failed: %s", os.environ.get("NOTIFY_SOCKET", "?"), exc)
            return False
        return True

    def ready(self, status: str = "") -> bool:
        extra = f"\nSTATUS={status}" if status else ""
        return self.send(f"READY=1\nMAINPID={os.getpid()}{extra}")

    def watchdog(self) -> bool:
        return self.send("WATCHDOG=1")

    def status(self, text: str) -> bool:
        """Update the one-line status shown by ``systemctl status`` (sent only when it changes)."""
        text = " ".join(text.split())
        if text == self._last_status:
            return False
        self._last_status = text
        return self.send(f"STATUS={text}")

    def stopping(self, status: str = "") -> bool:
        extra = f"\nSTATUS={status}" if status else ""
        return self.send(f"STOPPING=1{extra}")

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def _socket_address(value: str) -> str | bytes | None:
    if not value:
        return None
    if value.startswith("@"):  # abstract namespace socket
        return b"\0" + value[1:].encode()
    if value.startswith("/"):
        return value
    log.warning("ignoring NOTIFY_SOCKET=%r: neither a path nor an abstract socket", value)
    return None


def _watchdog_usec(env: dict[str, str] | os._Environ[str]) -> int | None:
    raw = env.get("WATCHDOG_USEC", "")
    if not raw:
        return None
    pid = env.get("WATCHDOG_PID", "")
    if pid and pid != str(os.getpid()):
        return None  # meant for another process (e.g. our parent shell)
    try:
        usec = int(raw)
    except ValueError:
        log.warning("ignoring WATCHDOG_USEC=%r: not an integer", raw)
        return None
    return usec if usec > 0 else None
