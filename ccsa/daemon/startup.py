"""Start-up checks the daemon, ``backfill`` and ``check`` share: Slurm release gate, clusters,
Operator rights.

`SUPPORTED_MAJORS` and `slurm_major` are the one definition of which Slurm releases ccsa
supports (``check`` reports with them, the daemon refuses to start without them).
`require_commands` makes a Slurm command that is not installed a configuration error (one line,
exit 1). `startup_checks` asks ``sacctmgr`` once; `clusters_with_retry` is the daemon's loop
around it: a Slurm error is retried with backoff (slurmdbd may come up after us), anything else
ends the start.
"""

from __future__ import annotations

import getpass
import logging
from collections.abc import Iterable
from typing import Protocol

import trio

from ccsa.errors import DaemonError, SlurmCommandError, SlurmError
from ccsa.slurm.commands import Slurm
from ccsa.slurm.runner import SlurmRunner

__all__ = [
    "DAEMON_COMMANDS",
    "SUPPORTED_MAJORS",
    "clusters_with_retry",
    "require_commands",
    "slurm_major",
    "startup_checks",
]

log = logging.getLogger(__name__)

#: Slurm releases whose JSON ccsa reads (docs/slurm-json.md: data_parser v0.0.40-v0.0.42).
SUPPORTED_MAJORS = (24, 25)
#: The Slurm commands the daemon runs (``ccsa.slurm.commands``).
DAEMON_COMMANDS = ("sacctmgr", "sacct", "squeue", "scontrol", "sinfo")


class StatusNotifier(Protocol):
    """The part of the systemd notifier the retry loop uses."""

    def status(self, text: str) -> bool: ...


def slurm_major(version: str) -> int | None:
    """The release major of a Slurm version string (``"24.11.5"`` -> 24), None if unparsable."""
    head = version.split(".", 1)[0]
    return int(head) if head.isdigit() else None


async def startup_checks(slurm: Slurm, user: str | None = None) -> list[str]:
    """Cluster names, Slurm version gate, Operator check. Returns the cluster names.

    Raises:
        DaemonError: unsupported Slurm version, or no clusters.
        SlurmError: sacctmgr failed (the caller decides whether to retry).
    """
    doc = await slurm.clusters()
    version = doc.meta.version
    if slurm_major(version) not in SUPPORTED_MAJORS:
        found = f"Slurm {version}" if version else "an unknown Slurm version (no meta.slurm)"
        raise DaemonError(
            f"`sacctmgr list clusters --json` reports {found}; ccsa supports Slurm 24.x and 25.x"
        )
    names = [c.name for c in doc.clusters if c.name]
    if not names:
        raise DaemonError("`sacctmgr list clusters --json` lists no clusters")
    me = user or getpass.getuser()
    try:
        users = await slurm.user(me)
        levels = {lvl for u in users.users if u.name == me for lvl in u.administrator_level}
    except SlurmError as exc:
        log.warning("cannot check Slurm permissions of %s: %s", me, exc)
        levels = None
    if levels is not None and not levels & {"Operator", "Administrator"}:
        log.warning(
            "!!! Slurm user %s is not an Operator (AdminLevel %s): sacct --allusers will only "
            "show %s's own jobs and cc-backend will miss everyone else's. Fix: "
            "`sacctmgr modify user %s set adminlevel=operator` (or, if the user does not exist "
            "in slurmdbd: `sacctmgr add user %s account=root adminlevel=operator`)",
            me, ",".join(sorted(levels)) or "None", me, me, me,
        )  # fmt: skip
    local = await slurm.learn_local_cluster(names)
    log.info("Slurm %s, clusters: %s%s", version, ", ".join(names),
             f" (local slurmctld: {local})" if local else "")  # fmt: skip
    return names


def require_commands(runner: SlurmRunner, names: Iterable[str] = DAEMON_COMMANDS) -> None:
    """Every command in ``names`` is installed (slurmBinDir, else PATH and /usr/bin).

    A missing executable is a configuration error, not a passing Slurm outage: retrying cannot
    install it. Raises DaemonError with the runner's one line (the command, where it looked,
    slurmBinDir).
    """
    for name in names:
        try:
            runner.resolve(name)
        except SlurmCommandError as exc:
            raise DaemonError(f"configuration: {exc.stderr}") from None


async def clusters_with_retry(
    slurm: Slurm, *, once: bool, max_delay: float, notify: StatusNotifier
) -> list[str]:
    """`startup_checks` until it succeeds; Slurm errors are retried (5 s doubling up to
    ``max_delay``) unless ``once``, where they become a DaemonError."""
    delay = 5.0
    while True:
        try:
            return await startup_checks(slurm)
        except SlurmError as exc:
            if once:
                raise DaemonError(f"startup check failed: {exc}") from exc
            notify.status(f"waiting for Slurm: {exc}")
            log.error("startup check failed (retrying in %.0f s): %s", delay, exc)
            await trio.sleep(delay)
            delay = min(delay * 2, max(max_delay, 5.0))
