"""sd_notify over a real NOTIFY_SOCKET datagram socket."""

from __future__ import annotations

import os
import socket
from pathlib import Path

from ccsa.sdnotify import Notifier


def _receiver(tmp_path: Path) -> tuple[socket.socket, str]:
    path = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(2)
    return sock, path


def test_messages_reach_the_socket(tmp_path: Path) -> None:
    sock, path = _receiver(tmp_path)
    n = Notifier({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "10000000"})
    assert n.enabled
    assert n.watchdog_interval == 5.0
    assert n.ready("serving 2 clusters")
    msg = sock.recv(4096).decode()
    assert msg.startswith("READY=1\n")
    assert f"MAINPID={os.getpid()}" in msg
    assert "STATUS=serving 2 clusters" in msg
    assert n.watchdog()
    assert sock.recv(4096) == b"WATCHDOG=1"
    assert n.status("outbox 3")
    assert sock.recv(4096) == b"STATUS=outbox 3"
    assert not n.status("outbox   3")  # unchanged text is not re-sent
    assert n.stopping("shutting down")
    assert sock.recv(4096) == b"STOPPING=1\nSTATUS=shutting down"
    n.close()
    sock.close()


def test_abstract_socket(tmp_path: Path) -> None:
    name = f"ccsa-test-{os.getpid()}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(b"\0" + name.encode())
    sock.settimeout(2)
    n = Notifier({"NOTIFY_SOCKET": "@" + name})
    assert n.watchdog()
    assert sock.recv(100) == b"WATCHDOG=1"
    sock.close()


def test_disabled_outside_systemd() -> None:
    n = Notifier({})
    assert not n.enabled
    assert n.watchdog_interval is None
    assert not n.ready()


def test_watchdog_for_another_pid_is_ignored() -> None:
    n = Notifier({"NOTIFY_SOCKET": "/nonexistent", "WATCHDOG_USEC": "1000", "WATCHDOG_PID": "1"})
    assert n.watchdog_interval is None


def test_send_failure_is_not_fatal(tmp_path: Path) -> None:
    n = Notifier({"NOTIFY_SOCKET": str(tmp_path / "gone.sock")})
    assert not n.ready()
