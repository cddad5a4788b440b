"""`check`'s decisions (pure): what a Slurm answer, a token, a directory chain or a GPU map means.

Each function turns facts the probes gathered (``ccsa.check.probes``) into `Finding` rows with
the fix an administrator needs. No I/O here: tests feed them real Slurm documents and claims.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import stat
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from ccsa.check.findings import Finding
from ccsa.daemon.startup import SUPPORTED_MAJORS, slurm_major
from ccsa.gres import GresError, gpu_count
from ccsa.slurm.sinfo import SinfoDoc

__all__ = [
    "Claims",
    "DirInfo",
    "cluster_findings",
    "gpu_nodes",
    "gpu_regex_findings",
    "jwt_claims",
    "operator_finding",
    "socket_dir_findings",
    "unauthorized_finding",
    "utc",
    "version_finding",
]


def version_finding(version: str, data_parser: str, clusters: Sequence[str]) -> Finding:
    """Slurm release gate (24.x / 25.x) with what sacctmgr reported."""
    major = slurm_major(version)
    detail = (
        f"Slurm {version or '?'}, data_parser {data_parser or '?'}, clusters "
        f"{', '.join(clusters) or '(none)'}"
    )
    if major not in SUPPORTED_MAJORS:
        return Finding(
            "slurm version",
            "fail",
            detail,
            "ccsa supports Slurm 24.x and 25.x; upgrade Slurm or use the Go cc-slurm-adapter",
        )
    if not clusters:
        return Finding("slurm version", "fail", detail, "sacctmgr lists no cluster: check slurmdbd")
    return Finding("slurm version", "ok", detail)


def operator_finding(
    user: str,
    levels: Sequence[str] | None,
    found: bool,
    slurm_config: Mapping[str, str] | None = None,
) -> Finding:
    """``sacctmgr show user`` (+ ``scontrol show config`` when known) -> the Operator check.

    root and slurm.conf's ``SlurmUser`` are privileged in Slurm whatever their AdminLevel.
    Without Operator, ``PrivateData=jobs`` hides other users' jobs from sacct/squeue (a
    failure: cc-backend would miss them); without that flag everything is visible and only
    ``scontrol write batch_script`` of other users' jobs is refused (a warning: job scripts are
    then missing unless slurmdbd stores them).
    """
    name = "operator rights"
    conf = slurm_config or {}
    slurm_user = conf.get("SlurmUser", "").partition("(")[0].strip()
    have = set(levels or ())
    if found and have & {"Operator", "Administrator"}:
        return Finding(name, "ok", f"{user} has AdminLevel {','.join(sorted(have))}")
    if user == "root" or (slurm_user and user == slurm_user):
        role = "root" if user == "root" else "slurm.conf's SlurmUser"
        return Finding(name, "ok", f"{user} is {role}: privileged in Slurm without AdminLevel")
    fix = (
        f"sacctmgr modify user {user} set adminlevel=operator"
        if found
        else f"sacctmgr add user {user} account=root adminlevel=operator"
    )
    who = (
        f"{user} has AdminLevel {','.join(sorted(have)) or 'None'}"
        if found
        else f"Slurm user {user!r} does not exist in slurmdbd"
    )
    private = conf.get("PrivateData")
    hidden = private is None or "jobs" in {p.strip().lower() for p in private.split(",")}
    if hidden:
        because = (
            "PrivateData=jobs" if private is not None else "if PrivateData includes jobs (unknown)"
        )
        return Finding(
            name,
            "fail",
            f"{who}: {because}: sacct --allusers and squeue show only {user}'s own jobs, so "
            "cc-backend would miss everyone else's",
            fix,
        )
    return Finding(
        name,
        "warn",
        f"{who}: PrivateData={private} lets it see every job, but `scontrol write batch_script` "
        "of other users' jobs is refused (job scripts are missing unless slurmdbd stores them)",
        fix,
    )


@dataclass(frozen=True, slots=True)
class Claims:
    """The JWT claims `unauthorized_finding` explains, read leniently: a claim of the wrong
    type counts as absent (``roles``: None when there is no list)."""

    exp: float | None = None
    roles: tuple[str, ...] | None = None
    sub: str = ""


def jwt_claims(token: str) -> Claims | None:
    """The claims of a JWT, decoded WITHOUT verifying it (for explanations only); None when
    ``token`` is not three base64url parts with a JSON object in the middle."""
    parts = token.strip().split(".")
    if len(parts) != 3:
        return None
    payload = parts[1] + "=" * (-len(parts[1]) % 4)
    try:
        value = json.loads(base64.urlsafe_b64decode(payload))
    except (ValueError, binascii.Error):
        return None
    if not isinstance(value, dict):
        return None
    exp, roles, sub = value.get("exp"), value.get("roles"), value.get("sub")
    return Claims(
        exp=float(exp) if isinstance(exp, int | float) and not isinstance(exp, bool) else None,
        roles=tuple(r for r in roles if isinstance(r, str)) if isinstance(roles, list) else None,
        sub=str(sub) if sub else "",
    )


def utc(epoch: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(epoch))


def unauthorized_finding(
    status: int, server_text: str, claims: Claims | None, now: float
) -> Finding:
    """Explain a 401/403 from cc-backend using the token's claims (never the token)."""
    problems: list[str] = []
    if claims is None:
        problems.append("ccRestJwt is not a JWT (three base64url parts)")
    else:
        if claims.exp is not None:
            if claims.exp < now:
                problems.append(f"the token expired at {utc(claims.exp)}")
            else:
                problems.append(f"expires {utc(claims.exp)}")
        names = sorted(claims.roles or ())
        if "api" not in names:
            problems.append(f"roles {names or 'none'} lack 'api'")
        elif set(names) not in ({"api"}, {"admin", "api"}):
            problems.append(f"roles {names}: cc-backend wants exactly ['api'] or ['admin','api']")
        else:
            problems.append(f"roles {names}")
        problems.append(f"sub {claims.sub!r}" if claims.sub else "no 'sub' claim")
    return Finding(
        "cc-backend auth",
        "fail",
        f"{status} from cc-backend: {server_text}; token: {'; '.join(problems)}",
        "issue a new API token in cc-backend for a user with role 'api' (Ed25519-signed, not "
        "expired), put it in ccRestJwt, and make sure this host is in api-allowed-ips",
    )


def cluster_findings(slurm_clusters: Sequence[str], backend_clusters: Sequence[str]) -> Finding:
    """Every cluster Slurm reports must exist in cc-backend (it rejects unknown clusters)."""
    missing = [c for c in slurm_clusters if c not in set(backend_clusters)]
    known = ", ".join(backend_clusters) or "none"
    if missing:
        return Finding(
            "cc-backend clusters",
            "fail",
            f"Slurm cluster(s) {', '.join(missing)} unknown to cc-backend (it has: {known}); "
            "every job of them would be rejected",
            "add a cluster.json for each to cc-backend's job archive (the name must equal "
            "Slurm's ClusterName) and restart cc-backend",
        )
    return Finding("cc-backend clusters", "ok", f"cc-backend knows {', '.join(slurm_clusters)}")


def gpu_regex_findings(
    gpu_maps: Sequence[tuple[str, int]], gpu_nodes: dict[str, int]
) -> list[Finding]:
    """``gpuPciAddrs`` entries (regex source, number of PCI addresses) vs ``{GPU node: GPUs}``.

    A regex matching no GPU node is a failure (a typo maps nothing); GPU nodes left unmapped and
    lists shorter than a node's GPU count are warnings. Matching is ``re.search`` like upstream.
    """
    name = "gpuPciAddrs"
    if not gpu_maps:
        if gpu_nodes:
            return [
                Finding(
                    name,
                    "info",
                    f"not set; the ids of the {len(gpu_nodes)} GPU nodes come from cc-backend's "
                    "topology (see the GPU ids rows)",
                    "",
                )
            ]
        return [Finding(name, "ok", "not set and no GPU nodes")]
    out: list[Finding] = []
    covered: set[str] = set()
    for source, count in gpu_maps:
        pattern = re.compile(source)
        hits = [n for n in sorted(gpu_nodes) if pattern.search(n) and n not in covered]
        matched = [n for n in sorted(gpu_nodes) if pattern.search(n)]
        covered.update(hits)
        if not matched:
            sample = ", ".join(sorted(gpu_nodes)[:5]) or "(sinfo reports no GPU nodes)"
            out.append(
                Finding(
                    name,
                    "fail",
                    f"regex {source!r} matches none of the GPU nodes sinfo reports ({sample})",
                    "fix the regex (it is searched in the host name; anchor with ^...$)",
                )
            )
            continue
        short = [n for n in matched if gpu_nodes[n] > count]
        if short:
            out.append(
                Finding(
                    name,
                    "warn",
                    f"regex {source!r} lists {count} PCI addresses but {short[0]} has "
                    f"{gpu_nodes[short[0]]} GPUs",
                    "list one PCI address per GPU, in NVML order",
                )
            )
        else:
            out.append(Finding(name, "ok", f"regex {source!r} matches {len(matched)} GPU nodes"))
    unmapped = sorted(set(gpu_nodes) - covered)
    if unmapped:
        out.append(
            Finding(
                name,
                "warn",
                f"{len(unmapped)} GPU nodes match no regex (e.g. {', '.join(unmapped[:3])}): "
                "their ids come from cc-backend's topology (see the GPU ids rows)",
                "add a gpuPciAddrs entry for them",
            )
        )
    return out


@dataclass(frozen=True, slots=True)
class DirInfo:
    """What `socket_dir_findings` needs of one directory (from ``os.stat``)."""

    path: str
    mode: int
    gid: int
    exists: bool = True


def socket_dir_findings(
    socket_path: str, chain: Sequence[DirInfo], group: str, gid: int | None
) -> Finding:
    """Can members of ``group`` reach ``socket_path``? ``chain`` = its directories, root first.

    Every directory needs search (x) permission for the group: through "other", or through the
    group bits when the directory belongs to the group.
    """
    name = "PrEp socket path"
    if gid is None:
        return Finding(
            name,
            "warn",
            f"group {group!r} does not exist on this machine: cannot check who reaches "
            f"{socket_path}",
            "run check on the slurmctld host, or pass --slurm-group with the group slurmctld "
            "runs as",
        )
    missing = [d for d in chain if not d.exists]
    blocked: list[str] = []
    for d in chain:
        if not d.exists:
            continue
        if d.mode & stat.S_IXOTH:
            continue
        if d.gid == gid and d.mode & stat.S_IXGRP:
            continue
        blocked.append(d.path)
    if blocked:
        first = blocked[0]
        return Finding(
            name,
            "fail",
            f"{first} is not searchable by group {group!r} (mode "
            f"{stat.filemode(next(d.mode for d in chain if d.path == first))}): the "
            "Prolog/Epilog hook cannot reach the socket",
            f"chgrp {group} {first} && chmod g+x {first} (the systemd unit's RuntimeDirectory "
            "with Group=slurm and RuntimeDirectoryMode=0750 does this)",
        )
    if missing:
        return Finding(
            name,
            "warn",
            f"{missing[0].path} does not exist yet",
            "it is created by systemd (RuntimeDirectory=) or the daemon; create it with group "
            f"{group} and mode 0750 when running without systemd",
        )
    return Finding(name, "ok", f"{socket_path}: directories searchable by group {group!r}")


def gpu_nodes(docs: Iterable[SinfoDoc]) -> dict[str, int]:
    """``{host: GPU count}`` of every node whose GRES mentions GPUs (sinfo groups)."""
    out: dict[str, int] = {}
    for doc in docs:
        for group in doc.sinfo:
            total = group.gres.total
            if "gpu" not in total:
                continue
            count = _gpu_count(total)
            for host in group.nodes.nodes:
                out[host] = max(out.get(host, 0), count)
    return out


def _gpu_count(total: str) -> int:
    """GPUs in sinfo's GRES text (`ccsa.gres`); 0 when it does not parse (no mapping to check)."""
    try:
        return gpu_count(total)
    except GresError:
        return 0
