"""`cc-slurm-adapter check`: tell an administrator what works, what does not, and how to fix it.

Runs every external dependency once, the way the daemon will use it and as the user running the
command (the service user; no root assumptions): the Slurm commands (version, data_parser,
cluster names), Operator rights (judged with ``PrivateData`` and ``SlurmUser`` from ``scontrol
show config``), cc-backend with the JWT (a 401 is explained from the token's own claims, decoded
without verifying and never printed), the cluster names in cc-backend (``GET /api/clusters/``),
NATS, the PrEp socket directory's permissions for the ``slurm`` group, and the ``gpuPciAddrs``
regexes against the GPU nodes ``sinfo`` reports. Each check yields `Finding` rows (check,
level, detail, fix); the decisions are pure functions (``*_finding``) fed by a thin I/O layer,
and `render` prints them as a rich table on a terminal, plain lines otherwise. Exit status 0
only when no finding is a failure.
"""

from __future__ import annotations

import base64
import binascii
import getpass
import grp
import json
import os
import re
import ssl
import stat
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal, TextIO

import httpx
import trio

from ccsa.config import Config
from ccsa.daemon.pipeline import slurm_for
from ccsa.daemon.startup import SUPPORTED_MAJORS, slurm_major
from ccsa.errors import CcsaError, PublishError, SlurmError
from ccsa.slurm.sinfo import SinfoDoc
from ccsa.sockaddr import UnixAddr

__all__ = [
    "Finding",
    "check_command",
    "exit_status",
    "gpu_regex_findings",
    "jwt_claims",
    "operator_finding",
    "render",
    "run_checks",
    "socket_dir_findings",
    "unauthorized_finding",
]

Level = Literal["ok", "warn", "fail", "info"]


@dataclass(frozen=True, slots=True)
class Finding:
    """One row of the report: ``fix`` says what to do (empty when nothing is needed)."""

    check: str
    level: Level
    detail: str
    fix: str = ""


def exit_status(findings: Iterable[Finding]) -> int:
    """0 when nothing failed (warnings are allowed), else 1."""
    return 1 if any(f.level == "fail" for f in findings) else 0


# --- pure decisions --------------------------------------------------------------------------


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


def jwt_claims(token: str) -> dict[str, Any] | None:
    """The payload of a JWT, decoded WITHOUT verifying it (for explanations only)."""
    parts = token.strip().split(".")
    if len(parts) != 3:
        return None
    payload = parts[1] + "=" * (-len(parts[1]) % 4)
    try:
        value = json.loads(base64.urlsafe_b64decode(payload))
    except (ValueError, binascii.Error):
        return None
    return value if isinstance(value, dict) else None


def _utc(epoch: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(epoch))


def unauthorized_finding(
    status: int, server_text: str, claims: dict[str, Any] | None, now: float
) -> Finding:
    """Explain a 401/403 from cc-backend using the token's claims (never the token)."""
    problems: list[str] = []
    if claims is None:
        problems.append("ccRestJwt is not a JWT (three base64url parts)")
    else:
        exp = claims.get("exp")
        if isinstance(exp, int | float):
            if exp < now:
                problems.append(f"the token expired at {_utc(exp)}")
            else:
                problems.append(f"expires {_utc(exp)}")
        roles = claims.get("roles")
        names = sorted(r for r in roles if isinstance(r, str)) if isinstance(roles, list) else []
        if "api" not in names:
            problems.append(f"roles {names or 'none'} lack 'api'")
        elif set(names) not in ({"api"}, {"admin", "api"}):
            problems.append(f"roles {names}: cc-backend wants exactly ['api'] or ['admin','api']")
        else:
            problems.append(f"roles {names}")
        if not claims.get("sub"):
            problems.append("no 'sub' claim")
        else:
            problems.append(f"sub {claims['sub']!r}")
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
                    f"not set; {len(gpu_nodes)} GPU nodes will report GPU indices, not PCI "
                    "addresses",
                    "set gpuPciAddrs if your cc-metric-collector reports PCI addresses",
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
                "their GPUs are reported as indices",
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


# --- I/O ---------------------------------------------------------------------------------


def _dir_chain(path: str) -> list[DirInfo]:
    parent = os.path.dirname(os.path.abspath(path))
    dirs: list[str] = []
    while True:
        dirs.append(parent)
        up = os.path.dirname(parent)
        if up == parent:
            break
        parent = up
    out: list[DirInfo] = []
    for d in reversed(dirs):
        try:
            st = os.stat(d)
        except OSError:
            out.append(DirInfo(d, 0, -1, exists=False))
            continue
        out.append(DirInfo(d, st.st_mode, st.st_gid))
    return out


def _group_gid(group: str) -> int | None:
    try:
        return grp.getgrnam(group).gr_gid
    except KeyError:
        return None


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
    """GPUs in a GRES string like ``gpu:h100:2,gpu:h200:4(S:0-1)`` (sum of gpu entries)."""
    count = 0
    for part in total.split(","):
        fields = part.split("(", 1)[0].split(":")
        if fields[0] == "gpu" and fields[-1].isdigit():
            count += int(fields[-1])
    return count


class _Checker:
    def __init__(
        self,
        cfg: Config,
        *,
        user: str,
        slurm_group: str,
        nats_timeout: float,
        now: Callable[[], float],
    ) -> None:
        self.cfg = cfg
        self.user = user
        self.slurm_group = slurm_group
        self.nats_timeout = nats_timeout
        self.now = now
        self.findings: list[Finding] = []
        self.slurm = slurm_for(cfg)
        self.runner = self.slurm.runner
        self.clusters: list[str] = []
        self.sinfo: list[SinfoDoc] = []

    def add(self, finding: Finding) -> None:
        self.findings.append(finding)

    async def run(self) -> list[Finding]:
        self.config()
        await self.slurm_checks()
        await self.backend()
        await self.nats()
        self.socket()
        self.gpu()
        return self.findings

    def config(self) -> None:
        self.add(Finding("config", "ok", f"{self.cfg.config_path} is valid"))
        for text in self.cfg.warnings:
            self.add(Finding("config", "warn", text, "edit the config file"))

    async def slurm_checks(self) -> None:
        try:
            doc = await self.slurm.clusters()
        except SlurmError as exc:
            self.add(
                Finding(
                    "sacctmgr list clusters",
                    "fail",
                    str(exc),
                    "make Slurm's commands reachable (slurmBinDir) and slurmdbd running",
                )
            )
            return
        self.clusters = [c.name for c in doc.clusters if c.name]
        self.add(version_finding(doc.meta.version, doc.meta.data_parser, self.clusters))
        try:
            users = await self.slurm.user(self.user)
        except SlurmError as exc:
            self.add(Finding("operator rights", "warn", f"cannot check: {exc}", ""))
        else:
            rows = [u for u in users.users if u.name == self.user]
            levels = [lvl for u in rows for lvl in u.administrator_level]
            try:
                slurm_config: dict[str, str] | None = await self.slurm.config_values()
            except SlurmError:  # PrivateData unknown: judged as if it hid jobs
                slurm_config = None
            self.add(operator_finding(self.user, levels, bool(rows), slurm_config))
        for cluster in self.clusters:
            await self.cluster_commands(cluster)

    async def cluster_commands(self, cluster: str) -> None:
        now = self.now()
        begin, end = datetime.fromtimestamp(now - 3600, UTC), datetime.fromtimestamp(now, UTC)
        calls: list[tuple[str, Callable[[], Any]]] = [
            (
                "sacct",
                lambda: self.slurm.sacct_window(cluster, begin, end),
            ),
            ("squeue", lambda: self.slurm.squeue_all(cluster)),
            ("scontrol show job", lambda: self.slurm.scontrol_jobs_json(cluster, [0])),
            ("sinfo", lambda: self.slurm.sinfo(cluster)),
        ]
        for label, call in calls:
            try:
                result = await call()
            except SlurmError as exc:
                self.add(
                    Finding(
                        f"{label} ({cluster})",
                        "fail",
                        str(exc),
                        "run the command by hand as this user; check slurmBinDir and "
                        "slurmCommandTimeout",
                    )
                )
                continue
            detail = self._describe(label, result)
            self.add(Finding(f"{label} ({cluster})", "ok", detail))
            if isinstance(result, SinfoDoc):
                self.sinfo.append(result)

    def _describe(self, label: str, result: Any) -> str:
        latency = self.runner.stats()["commands"]
        cmd = label.split()[0]
        took = latency.get(cmd, {}).get("last_latency", 0.0)
        if isinstance(result, SinfoDoc):
            nodes = {h for g in result.sinfo for h in g.nodes.nodes}
            what = f"{len(nodes)} nodes"
        elif isinstance(result, list):
            what = f"{len(result)} jobs"
        else:
            what = f"{len(getattr(result, 'jobs', []))} jobs"
        return f"{what} in {took:.2f} s"

    def _verify(self) -> bool | ssl.SSLContext:
        if self.cfg.cc_rest_insecure:
            return False
        if self.cfg.cc_rest_ca_file:
            return ssl.create_default_context(cafile=self.cfg.cc_rest_ca_file)
        return ssl.create_default_context()

    async def backend(self) -> None:
        token = self.cfg.cc_rest_jwt.get()
        url = self.cfg.cc_rest_url
        try:
            verify = self._verify()
        except (OSError, ssl.SSLError) as exc:
            self.add(Finding("cc-backend", "fail", f"ccRestCaFile: {exc}", "fix ccRestCaFile"))
            return
        headers = {"X-Auth-Token": token, "Accept": "application/json"}
        async with httpx.AsyncClient(
            base_url=url,
            headers=headers,
            timeout=self.cfg.cc_rest_timeout,
            verify=verify,
            trust_env=False,
        ) as client:
            try:
                resp = await client.get(
                    "/api/jobs/", params={"state": "running", "items-per-page": "1"}
                )
            except httpx.TransportError as exc:
                text = (str(exc) or type(exc).__name__).replace(token, "<jwt>")
                self.add(
                    Finding(
                        "cc-backend",
                        "fail",
                        f"{url}: {type(exc).__name__}: {text}",
                        "check ccRestUrl, that cc-backend runs, and firewalls (TLS: ccRestCaFile)",
                    )
                )
                return
            if resp.status_code in (401, 403):
                self.add(
                    unauthorized_finding(
                        resp.status_code, _error_text(resp), jwt_claims(token), self.now()
                    )
                )
                return
            if resp.status_code != 200:
                self.add(
                    Finding(
                        "cc-backend",
                        "fail",
                        f"GET {url}/api/jobs/ answered {resp.status_code}: {_error_text(resp)}",
                        "check cc-backend's log",
                    )
                )
                return
            claims = jwt_claims(token) or {}
            exp = claims.get("exp")
            note = f"; token expires {_utc(exp)}" if isinstance(exp, int | float) else ""
            self.add(Finding("cc-backend auth", "ok", f"{url} accepts the token{note}"))
            await self.backend_clusters(client)

    async def backend_clusters(self, client: httpx.AsyncClient) -> None:
        try:
            resp = await client.get("/api/clusters/")
        except httpx.TransportError as exc:
            self.add(Finding("cc-backend clusters", "warn", f"cannot list clusters: {exc}", ""))
            return
        if resp.status_code != 200:
            self.add(
                Finding(
                    "cc-backend clusters",
                    "warn",
                    f"GET /api/clusters/ answered {resp.status_code} ({_error_text(resp)}): "
                    "cannot compare cluster names",
                    "make sure every Slurm ClusterName has a cluster.json in cc-backend",
                )
            )
            return
        try:
            listed = resp.json().get("clusters") or []
            names = [str(c["name"]) for c in listed if isinstance(c, dict) and "name" in c]
        except (ValueError, AttributeError) as exc:
            self.add(Finding("cc-backend clusters", "warn", f"undecodable answer: {exc}", ""))
            return
        if self.clusters:
            self.add(cluster_findings(self.clusters, names))

    async def nats(self) -> None:
        cfg = self.cfg
        if not cfg.nats_enabled:
            self.add(Finding("nats", "info", "natsServer not set: NATS publishing is off"))
            return
        from ccsa.natsbus.publisher import Publisher, subject_warning

        where = f"nats://{cfg.nats_server}:{cfg.nats_port}"
        try:
            async with Publisher.from_config(cfg) as pub:
                await pub.wait_connected(self.nats_timeout)
        except (PublishError, CcsaError) as exc:
            self.add(
                Finding(
                    "nats",
                    "fail",
                    f"{where}: {exc}",
                    "check natsServer/natsPort, that nats-server runs and is reachable, and "
                    "natsUser/natsPassword/natsCredsFile/natsNKeySeedFile",
                )
            )
        else:
            self.add(Finding("nats", "ok", f"connected to {where}"))
        warning = subject_warning(cfg.nats_subject)
        if warning:
            self.add(
                Finding(
                    "nats subject",
                    "warn",
                    warning,
                    "set natsSubject to cc-backend's subject-job-event (e.g. cc.job.event)",
                )
            )

    def socket(self) -> None:
        addr = self.cfg.prep_sock_connect_path
        if not isinstance(addr, UnixAddr):
            self.add(Finding("PrEp socket path", "ok", f"{addr}: TCP, no file permissions"))
            return
        self.add(
            socket_dir_findings(
                addr.path, _dir_chain(addr.path), self.slurm_group, _group_gid(self.slurm_group)
            )
        )

    def gpu(self) -> None:
        maps = [(m.source, len(m.addrs)) for m in self.cfg.gpu_pci_addrs]
        if not self.sinfo and maps:
            self.add(Finding("gpuPciAddrs", "warn", "not checked: sinfo failed", ""))
            return
        self.findings.extend(gpu_regex_findings(maps, gpu_nodes(self.sinfo)))


def _error_text(resp: httpx.Response) -> str:
    try:
        value = resp.json()
    except ValueError:
        value = None
    if isinstance(value, dict) and isinstance(value.get("error"), str):
        return str(value["error"])
    return resp.text.strip()[:200] or "(empty body)"


async def run_checks(
    cfg: Config,
    *,
    user: str | None = None,
    slurm_group: str = "slurm",
    nats_timeout: float = 5.0,
    now: Callable[[], float] = time.time,
) -> list[Finding]:
    """Run every check once and return the findings (never raises for a broken dependency)."""
    checker = _Checker(
        cfg,
        user=user or getpass.getuser(),
        slurm_group=slurm_group,
        nats_timeout=nats_timeout,
        now=now,
    )
    return await checker.run()


# --- output ------------------------------------------------------------------------------

_MARK = {"ok": "OK", "warn": "WARN", "fail": "FAIL", "info": "INFO"}
_STYLE = {"ok": "green", "warn": "yellow", "fail": "bold red", "info": "cyan"}


def render(findings: Sequence[Finding], out: TextIO, *, rich: bool | None = None) -> None:
    """A table (check, result, what to do): rich on a terminal, plain text otherwise."""
    use_rich = out.isatty() if rich is None else rich
    if use_rich:
        from rich.console import Console
        from rich.table import Table

        table = Table(title="cc-slurm-adapter check", show_lines=False)
        table.add_column("check", no_wrap=True)
        table.add_column("result")
        table.add_column("what to do")
        for f in findings:
            result = f"[{_STYLE[f.level]}]{_MARK[f.level]}[/] {_escape(f.detail)}"
            table.add_row(f.check, result, _escape(f.fix))
        Console(file=out, soft_wrap=False).print(table)
    else:
        for f in findings:
            out.write(f"{_MARK[f.level]:<4}  {f.check}: {f.detail}\n")
            if f.fix:
                out.write(f"      fix: {f.fix}\n")
    failed = sum(f.level == "fail" for f in findings)
    warned = sum(f.level == "warn" for f in findings)
    out.write(
        f"{'everything needed works' if not failed else f'{failed} check(s) failed'}"
        f"{f', {warned} warning(s)' if warned else ''}\n"
    )


def _escape(text: str) -> str:
    from rich.markup import escape

    return escape(text)


def check_command(
    *,
    config: str | None = None,
    debug: int = 1,
    slurm_group: str = "slurm",
    json: bool = False,
) -> int:
    """Check the config, Slurm, cc-backend, NATS and permissions; print what to fix.

    Parameters
    ----------
    config
        Config file (default /etc/cc-slurm-adapter/config.json).
    debug
        Log level 0-5 (default 1: errors only; the table says the rest).
    slurm_group
        The group slurmctld's Prolog/Epilog hook runs as (default slurm).
    json
        Print the findings as JSON lines instead of a table.
    """
    from ccsa import cli

    cfg = cli.load_config(config, debug)
    findings = trio.run(lambda: run_checks(cfg, slurm_group=slurm_group))
    if json:
        import msgspec

        for f in findings:
            sys.stdout.write(
                msgspec.json.encode(
                    {"check": f.check, "level": f.level, "detail": f.detail, "fix": f.fix}
                ).decode()
                + "\n"
            )
    else:
        render(findings, sys.stdout)
    sys.stdout.flush()
    return exit_status(findings)
