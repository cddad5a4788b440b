"""`check`'s row producers: each asks one dependency, the way the daemon will, and returns rows.

A producer is ``async (CheckContext) -> list[Finding]``; `PRODUCERS` runs in order and each
may leave facts in the context for later ones (Slurm's cluster names for cc-backend's, the
``sinfo`` answers for the GPU map). Add a check by appending a producer: it gets the config,
the user, the Slurm commands and those facts, and never raises for a broken dependency (a
failing dependency is a row). The decisions are the pure functions of ``ccsa.check.rules``.
"""

from __future__ import annotations

import grp
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

import httpx
import msgspec

from ccsa import permissions
from ccsa.ccbackend.answers import error_text
from ccsa.ccbackend.pool import ssl_context
from ccsa.check.findings import Finding
from ccsa.check.rules import (
    DirInfo,
    cluster_findings,
    gpu_nodes,
    gpu_regex_findings,
    jwt_claims,
    operator_finding,
    socket_dir_findings,
    unauthorized_finding,
    utc,
    version_finding,
)
from ccsa.check.topology import topology_rows
from ccsa.config import Config
from ccsa.errors import CcsaError, ConfigError, PublishError, SlurmError
from ccsa.slurm.commands import Slurm
from ccsa.slurm.sinfo import SinfoDoc
from ccsa.sockaddr import UnixAddr

__all__ = ["PRODUCERS", "CheckContext", "RowProducer"]


@dataclass
class CheckContext:
    """What every producer may read. The facts are left by earlier producers for later ones:
    ``clusters``, ``sinfo``, ``slurm_reached`` by the Slurm producer; ``backend_clusters`` (the
    body of cc-backend's ``GET /api/clusters/``, None when it could not be read) by the
    cc-backend producer, for rows about cc-backend's topology."""

    cfg: Config
    user: str
    slurm_group: str
    nats_timeout: float
    now: Callable[[], float]
    slurm: Slurm
    clusters: list[str] = field(default_factory=list)
    sinfo: list[SinfoDoc] = field(default_factory=list)
    slurm_reached: bool = False
    backend_clusters: bytes | None = None


RowProducer = Callable[[CheckContext], Awaitable[list[Finding]]]


async def config_rows(ctx: CheckContext) -> list[Finding]:
    """The config loaded (else check would not run); its warnings."""
    rows = [Finding("config", "ok", f"{ctx.cfg.config_path} is valid")]
    for text in ctx.cfg.warnings:
        detail, own, fix = text.partition("; fix: ")  # a warning may say its own fix
        rows.append(Finding("config", "warn", detail, fix if own else "edit the config file"))
    return rows


async def slurm_rows(ctx: CheckContext) -> list[Finding]:
    """sacctmgr (version, clusters), Operator rights, and each cluster's commands."""
    try:
        doc = await ctx.slurm.clusters()
    except SlurmError as exc:
        fix = "make Slurm's commands reachable (slurmBinDir) and slurmdbd running"
        return [Finding("sacctmgr list clusters", "fail", str(exc), fix)]
    ctx.slurm_reached = True
    ctx.clusters = [c.name for c in doc.clusters if c.name]
    rows = [version_finding(doc.meta.version, doc.meta.data_parser, ctx.clusters)]
    try:
        users = await ctx.slurm.user(ctx.user)
    except SlurmError as exc:
        rows.append(Finding("operator rights", "warn", f"cannot check: {exc}", ""))
    else:
        mine = [u for u in users.users if u.name == ctx.user]
        levels = [lvl for u in mine for lvl in u.administrator_level]
        try:
            slurm_config: dict[str, str] | None = await ctx.slurm.config_values()
        except SlurmError:  # PrivateData unknown: judged as if it hid jobs
            slurm_config = None
        rows.append(operator_finding(ctx.user, levels, bool(mine), slurm_config))
    for cluster in ctx.clusters:
        rows += await _cluster_commands(ctx, cluster)
    return rows


async def _cluster_commands(ctx: CheckContext, cluster: str) -> list[Finding]:
    """Each command the daemon runs, once, for the last hour: what it saw and how long it took."""
    now = ctx.now()
    begin, end = datetime.fromtimestamp(now - 3600, UTC), datetime.fromtimestamp(now, UTC)
    slurm = ctx.slurm

    async def sacct() -> str:
        return f"{len((await slurm.sacct_window(cluster, begin, end)).jobs)} jobs"

    async def squeue() -> str:
        return f"{len((await slurm.squeue_all(cluster)).jobs)} jobs"

    async def scontrol() -> str:
        return f"{len(await slurm.scontrol_jobs_json(cluster, [0]))} jobs"

    async def sinfo() -> str:
        doc = await slurm.sinfo(cluster)
        ctx.sinfo.append(doc)  # for the GPU map row
        return f"{len({h for g in doc.sinfo for h in g.nodes.nodes})} nodes"

    calls: list[tuple[str, Callable[[], Awaitable[str]]]] = [
        ("sacct", sacct), ("squeue", squeue), ("scontrol show job", scontrol), ("sinfo", sinfo),
    ]  # fmt: skip
    rows: list[Finding] = []
    for label, call in calls:
        try:
            what = await call()
        except SlurmError as exc:
            fix = "run the command by hand as this user; check slurmBinDir and slurmCommandTimeout"
            rows.append(Finding(f"{label} ({cluster})", "fail", str(exc), fix))
            continue
        took = slurm.runner.stats()["commands"].get(label.split()[0], {}).get("last_latency", 0.0)
        rows.append(Finding(f"{label} ({cluster})", "ok", f"{what} in {took:.2f} s"))
    return rows


async def backend_rows(ctx: CheckContext) -> list[Finding]:
    """cc-backend with the JWT (``GET /api/jobs/``), then its cluster names."""
    cfg = ctx.cfg
    token = cfg.cc_rest_jwt.get()
    url = cfg.cc_rest_url
    try:
        verify = ssl_context(False if cfg.cc_rest_insecure else cfg.cc_rest_ca_file or True)
    except ConfigError as exc:
        return [Finding("cc-backend", "fail", f"ccRestCaFile: {exc}", "fix ccRestCaFile")]
    headers = {"X-Auth-Token": token, "Accept": "application/json"}
    async with httpx.AsyncClient(
        base_url=url, headers=headers, timeout=cfg.cc_rest_timeout, verify=verify, trust_env=False
    ) as client:
        try:
            resp = await client.get(
                "/api/jobs/", params={"state": "running", "items-per-page": "1"}
            )
        except httpx.TransportError as exc:
            text = (str(exc) or type(exc).__name__).replace(token, "<jwt>")
            fix = "check ccRestUrl, that cc-backend runs, and firewalls (TLS: ccRestCaFile)"
            return [Finding("cc-backend", "fail", f"{url}: {type(exc).__name__}: {text}", fix)]
        if resp.status_code in (401, 403):
            why = error_text(resp.content)
            return [unauthorized_finding(resp.status_code, why, jwt_claims(token), ctx.now())]
        if resp.status_code != 200:
            detail = f"GET {url}/api/jobs/ answered {resp.status_code}: {error_text(resp.content)}"
            return [Finding("cc-backend", "fail", detail, "check cc-backend's log")]
        claims = jwt_claims(token)
        exp = claims.exp if claims else None
        note = f"; token expires {utc(exp)}" if exp is not None else ""
        rows = [Finding("cc-backend auth", "ok", f"{url} accepts the token{note}")]
        return rows + await _backend_clusters(ctx, client)


async def _backend_clusters(ctx: CheckContext, client: httpx.AsyncClient) -> list[Finding]:
    name = "cc-backend clusters"
    try:
        resp = await client.get("/api/clusters/")
    except httpx.TransportError as exc:
        return [Finding(name, "warn", f"cannot list clusters: {exc}", "")]
    if resp.status_code != 200:
        detail = (
            f"GET /api/clusters/ answered {resp.status_code} ({error_text(resp.content)}): "
            "cannot compare cluster names"
        )
        fix = "make sure every Slurm ClusterName has a cluster.json in cc-backend"
        return [Finding(name, "warn", detail, fix)]
    ctx.backend_clusters = resp.content
    try:
        listed = resp.json().get("clusters") or []
        names = [str(c["name"]) for c in listed if isinstance(c, dict) and "name" in c]
    except (ValueError, AttributeError) as exc:
        return [Finding(name, "warn", f"undecodable answer: {exc}", "")]
    return [cluster_findings(ctx.clusters, names)] if ctx.clusters else []


async def nats_rows(ctx: CheckContext) -> list[Finding]:
    """A connection to the NATS server with the configured credentials; the subject."""
    cfg = ctx.cfg
    if not cfg.nats_enabled:
        return [Finding("nats", "info", "natsServer not set: NATS publishing is off")]
    from ccsa.natsbus.natsconf import subject_warning
    from ccsa.natsbus.publisher import Publisher

    where = f"nats://{cfg.nats_server}:{cfg.nats_port}"
    try:
        async with Publisher.from_config(cfg) as pub:
            await pub.wait_connected(ctx.nats_timeout)
    except (PublishError, CcsaError) as exc:
        fix = (
            "check natsServer/natsPort, that nats-server runs and is reachable, and "
            "natsUser/natsPassword/natsCredsFile/natsNKeySeedFile"
        )
        rows = [Finding("nats", "fail", f"{where}: {exc}", fix)]
    else:
        rows = [Finding("nats", "ok", f"connected to {where}")]
    warning = subject_warning(cfg.nats_subject)
    if warning:
        fix = "set natsSubject to cc-backend's subject-job-event (e.g. cc.job.event)"
        rows.append(Finding("nats subject", "warn", warning, fix))
    return rows


async def socket_rows(ctx: CheckContext) -> list[Finding]:
    """Can the Prolog/Epilog hook (group ``slurm_group``) reach the PrEp socket?"""
    addr = ctx.cfg.prep_sock_connect_path
    if not isinstance(addr, UnixAddr):
        return [Finding("PrEp socket path", "ok", f"{addr}: TCP, no file permissions")]
    gid = _group_gid(ctx.slurm_group)
    return [socket_dir_findings(addr.path, _dir_chain(addr.path), ctx.slurm_group, gid)]


async def permission_rows(ctx: CheckContext) -> list[Finding]:
    """Modes and owners: secrets for the service user only, the socket and hook.json for the
    hook's group (`ccsa.permissions`, docs/admin-guide.md section 6)."""
    cfg, group, facts = ctx.cfg, ctx.slurm_group, permissions.facts
    jwt = permissions.secret_file(facts(cfg.config_path), "the cc-backend JWT", group)
    verdicts = [("config file", jwt)]
    for key, path in (("natsCredsFile", cfg.nats_creds_file), ("natsNKeySeedFile",
                      cfg.nats_nkey_seed_file)):  # fmt: skip
        if path:
            verdicts.append((key, permissions.secret_file(facts(path), key, group)))
    if isinstance(cfg.prep_sock_listen_path, UnixAddr):
        sock = facts(cfg.prep_sock_listen_path.path)
        verdicts.append(("PrEp socket", permissions.socket(sock, group)))
    hook = facts(permissions.HOOK_CONFIG)
    try:
        content = _json_object(hook.path) if hook.exists else None
    except PermissionError:
        text = f"{hook.path}: not readable by {ctx.user}; run check as root to see it"
        verdicts.append(("hook config", permissions.Verdict("info", text)))
    else:
        want = str(cfg.prep_sock_connect_path)
        verdicts.append(("hook config", permissions.hook_config(hook, content, want, group)))
    return [Finding(name, v.level, v.detail, v.fix) for name, v in verdicts]


def _json_object(path: str) -> dict[str, object] | None:
    """``path``'s JSON object, None when it holds anything else; PermissionError passes."""
    with open(path, "rb") as fh:
        data = fh.read()
    try:
        value = msgspec.json.decode(data)
    except (msgspec.DecodeError, UnicodeDecodeError):
        return None
    return value if isinstance(value, dict) else None


async def gpu_rows(ctx: CheckContext) -> list[Finding]:
    """``gpuPciAddrs`` against the GPU nodes sinfo reported."""
    maps = [(m.source, len(m.addrs)) for m in ctx.cfg.gpu_pci_addrs]
    if not ctx.sinfo:  # nothing is known about GPU nodes: neither OK nor a finding of its own
        why = "sinfo failed" if ctx.slurm_reached else "Slurm could not be reached"
        return [Finding("gpuPciAddrs", "skip", f"not checked: {why} (see above)")]
    return gpu_regex_findings(maps, gpu_nodes(ctx.sinfo))


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


#: The checks, in order (later ones read the facts earlier ones leave in the context).
PRODUCERS: list[RowProducer] = [
    config_rows,
    slurm_rows,
    backend_rows,
    nats_rows,
    socket_rows,
    permission_rows,
    gpu_rows,
    topology_rows,
]
