"""Who can read what: the modes and owners `check` verifies for the files that hold secrets, the
PrEp socket, and the hook's own small config.

The layout (docs/admin-guide.md, "Files, owners and modes") gives each reader exactly what it
needs: the config file and the NATS credential files hold secrets (the cc-backend JWT, NATS
passwords and keys) and are readable by the service user only; slurmctld's hook (group
``slurm``) needs the socket, never the JWT: it connects to the socket (mode 0660, group
``slurm``) and, when the socket is not the default one, reads its address from
:data:`HOOK_CONFIG`, which holds nothing else. ``hooks/hook.sh`` passes that file when it exists.

Pure decisions over :class:`FileFacts` (``secret_file``, ``socket``, ``hook_config``) apart from
:func:`facts`, which ``stat``-s a path and names its owner and group.
"""

from __future__ import annotations

import grp
import os
import pwd
import stat
from dataclasses import dataclass
from typing import Literal

from ccsa import sockaddr

__all__ = ["HOOK_CONFIG", "FileFacts", "Verdict", "facts", "hook_config", "secret_file", "socket"]

#: The hook's config: ``{"prepSockConnectPath": "..."}`` only; hooks/hook.sh reads it if present.
HOOK_CONFIG = "/opt/cc-slurm-adapter/hook.json"
#: Keys that must never be in a file the hook (group slurm) can read.
SECRET_KEYS = ("ccRestJwt", "natsPassword", "natsCredsFile", "natsNKeySeedFile")

DEFAULT_SOCK = "/run/cc-slurm-adapter/daemon.sock"  # = ccsa.config.DEFAULT_SOCK
Level = Literal["ok", "warn", "fail", "info"]


@dataclass(frozen=True, slots=True)
class Verdict:
    """One result: level, what was found, and the command that fixes it (empty when none)."""

    level: Level
    detail: str
    fix: str = ""


@dataclass(frozen=True, slots=True)
class FileFacts:
    """What the decisions need of one path (from ``os.stat``): mode bits, owner and group names."""

    path: str
    exists: bool
    mode: int = 0
    owner: str = ""
    group: str = ""


def facts(path: str) -> FileFacts:
    """``stat`` ``path`` (not following a final symlink's absence); names fall back to ids."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return FileFacts(path, exists=False)
    try:
        owner = pwd.getpwuid(st.st_uid).pw_name
    except KeyError:
        owner = str(st.st_uid)
    try:
        group = grp.getgrgid(st.st_gid).gr_name
    except KeyError:
        group = str(st.st_gid)
    return FileFacts(path, True, st.st_mode, owner, group)


def _describe(f: FileFacts) -> str:
    return f"{f.path} ({stat.filemode(f.mode)} {f.owner}:{f.group})"


def secret_file(f: FileFacts, what: str, hook_group: str) -> Verdict:
    """A file holding ``what`` (e.g. "the cc-backend JWT") must be readable by its owner only.

    Group read is accepted only for the owner's own group (a user-private group, named like the
    user) or, for a root-owned file, a group other than ``hook_group``; never for the hook's group.
    """
    fix = f"chmod 0600 {f.path}"
    if not f.exists:
        return Verdict("info", f"{f.path} does not exist")
    if f.mode & (stat.S_IROTH | stat.S_IWOTH):
        return Verdict("fail", f"{_describe(f)} holds {what} and every user can read it", fix)
    if f.mode & stat.S_IRGRP:
        if f.group == hook_group:
            return Verdict(
                "fail",
                f"{_describe(f)} holds {what} and group {hook_group} (the hook's) can read it; "
                "the hook needs only the socket",
                f"{fix} (the hook reads {HOOK_CONFIG} instead, see docs/admin-guide.md)",
            )
        if f.group != f.owner and f.owner != "root":
            return Verdict("warn", f"{_describe(f)} holds {what}; group {f.group} can read it", fix)
    return Verdict("ok", f"{_describe(f)}: {what} readable by {f.owner} only")


def socket(f: FileFacts, hook_group: str) -> Verdict:
    """The PrEp socket: group ``hook_group`` may connect (rw), nobody else but the owner."""
    if not f.exists:
        return Verdict("info", f"{f.path} does not exist: the daemon is not running here")
    if not stat.S_ISSOCK(f.mode):
        return Verdict("fail", f"{_describe(f)} is not a socket", f"remove {f.path}")
    if f.mode & stat.S_IWOTH:
        return Verdict(
            "fail",
            f"{_describe(f)}: every user can send job events to the daemon",
            f"chmod 0660 {f.path} (the daemon creates it so; is an old socket left?)",
        )
    if f.group != hook_group or f.mode & (stat.S_IRGRP | stat.S_IWGRP) != (
        stat.S_IRGRP | stat.S_IWGRP
    ):
        return Verdict(
            "fail",
            f"{_describe(f)}: group {hook_group} (the hook's) cannot connect",
            "run the daemon with group slurm (the unit's Group=slurm); it creates the socket "
            "with mode 0660",
        )
    return Verdict("ok", f"{_describe(f)}: the hook (group {hook_group}) can connect")


def hook_config(
    f: FileFacts, content: dict[str, object] | None, want: str, hook_group: str
) -> Verdict:
    """:data:`HOOK_CONFIG`: needed when the socket is not the default one (``want`` is the
    config's ``prepSockConnectPath``, as text ``sockaddr.parse`` reads); never holds secrets;
    readable by the hook's group.
    ``content`` is the file's JSON object (None when absent or not a JSON object)."""
    default = sockaddr.parse(want) == sockaddr.parse(DEFAULT_SOCK)
    if not f.exists:
        if default:
            return Verdict("ok", f"{f.path} absent: the hook uses the default socket {want}")
        return Verdict(
            "warn",
            f"{f.path} absent: the hook connects to {DEFAULT_SOCK}, but the daemon listens "
            f"on {want}",
            f'echo \'{{"prepSockConnectPath": "{want}"}}\' > {f.path} && chmod 0644 {f.path}',
        )
    if content is None:
        return Verdict("fail", f"{f.path} is not a JSON object", f"rewrite {f.path}")
    secrets = sorted(k for k in content if k in SECRET_KEYS)
    if secrets:
        return Verdict(
            "fail",
            f"{f.path} holds {', '.join(secrets)}: the hook must not read secrets",
            f"keep only prepSockConnectPath in {f.path}",
        )
    readable = f.mode & stat.S_IROTH or (f.group == hook_group and f.mode & stat.S_IRGRP)
    if not readable:
        return Verdict(
            "fail",
            f"{_describe(f)}: group {hook_group} cannot read it, so the hook cannot send",
            f"chmod 0644 {f.path} (it holds no secret)",
        )
    got = content.get("prepSockConnectPath", DEFAULT_SOCK)
    try:
        same = isinstance(got, str) and sockaddr.parse(got) == sockaddr.parse(want)
    except ValueError:
        same = False
    if not same:
        return Verdict(
            "warn",
            f"{f.path} sends the hook to {got}, but the daemon's config says {want}",
            f"set prepSockConnectPath to {want} in {f.path}",
        )
    return Verdict("ok", f"{_describe(f)}: the hook's socket address {got}, no secrets")
