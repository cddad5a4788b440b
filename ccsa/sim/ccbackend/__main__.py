"""``python -m ccsa.sim.ccbackend``: run the stand-in cc-backend for the demo and the benchmarks.

argparse rather than the daemon's cyclopts app: this is a test tool with a flat option list, and
it keeps the simulator independent of ccsa's own CLI. It prints one line
``listening on <URL>`` on stdout once the port is bound, so a parent process can read the port.
"""

from __future__ import annotations

import argparse
import os
import ssl
import sys
from collections.abc import Sequence
from pathlib import Path

import trio

from ccsa.errors import ConfigError
from ccsa.sim.ccbackend import clusters, topologies
from ccsa.sim.ccbackend.auth import AuthConfig
from ccsa.sim.ccbackend.server import StandIn
from ccsa.sim.ccbackend.state import Backend

EPILOG = """\
examples:
  python -m ccsa.sim.ccbackend --cluster-config shared/spec/cc-backend/example-clusters \\
      --write-token /tmp/cc.jwt --port 8080
  python -m ccsa.sim.ccbackend --cluster 'fritz=main:f[0101-0188];big:f[2157-2188]' --no-auth
  python -m ccsa.sim.ccbackend --cluster test --no-auth --commit-interval 120 --nats-mode

auth: cc-backend's keys are read from JWT_PUBLIC_KEY / JWT_PRIVATE_KEY (base64, Ed25519) unless
--no-auth; --write-token generates a keypair (when none is given) and writes an api token.
"""


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command line; ``--help`` documents every switch."""
    p = argparse.ArgumentParser(
        prog="python -m ccsa.sim.ccbackend",
        description="Stand-in cc-backend v1.5.4 (REST: start_job, stop_job, jobs, nodestate).",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    net = p.add_argument_group("network")
    net.add_argument("--host", default="127.0.0.1", help="listen address (default 127.0.0.1)")
    net.add_argument("--port", type=int, default=0, help="listen port; 0 = a free one (default)")
    net.add_argument("--tls-cert", metavar="PEM", help="serve HTTPS with this certificate chain")
    net.add_argument("--tls-key", metavar="PEM", help="private key for --tls-cert")
    net.add_argument("--gzip", action="store_true", help="gzip JSON answers (as v1.5 does)")
    auth = p.add_argument_group("auth (cc-backend §1.3: EdDSA JWT in X-Auth-Token)")
    auth.add_argument("--no-auth", action="store_true", help="accept requests without a token")
    auth.add_argument(
        "--write-token",
        metavar="FILE",
        help="write a valid api token (sub=ccsa, roles=[api]) to FILE (mode 0600)",
    )
    auth.add_argument(
        "--allowed-ip",
        action="append",
        default=[],
        metavar="IP",
        help="api-allowed-ips entry (repeatable; none = any address; '*' = any)",
    )
    net.add_argument(
        "--request-log",
        metavar="FILE",
        help="append each start_job/stop_job request and its answer to FILE (JSON lines)",
    )
    cl = p.add_argument_group("clusters")
    cl.add_argument(
        "--cluster-config",
        action="append",
        default=[],
        metavar="PATH",
        help="a *.cluster.json file, or a directory of them (repeatable)",
    )
    cl.add_argument(
        "--cluster",
        action="append",
        default=[],
        metavar="SPEC",
        help="generated cluster: NAME (one sub-cluster 'main' with nodes '*') or "
        "NAME=SUB:HOSTLIST[;SUB:HOSTLIST...] (repeatable)",
    )
    cl.add_argument(
        "--example-topologies",
        action="store_true",
        help="also serve the example clusters with real topologies (smtx86, armc, gpux, nocore)",
    )
    ver = p.add_argument_group("behaviour / version switches")
    ver.add_argument(
        "--commit-interval",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="job_cache commit worker interval; 0 = commit at once (default), 120 = production",
    )
    ver.add_argument(
        "--legacy-v14",
        action="store_true",
        help="cc-backend <= v1.4: stop of an unknown job gives 422, 8-state list, no job_cache",
    )
    ver.add_argument(
        "--nats-mode",
        action="store_true",
        help="main.api-subjects set: REST start_job/stop_job answer 404",
    )
    ver.add_argument(
        "--no-clusters-api",
        action="store_true",
        help="GET /api/clusters/ answers 404 (clients fall back to Slurm's node shapes)",
    )
    return p.parse_args(argv)


def _parse_cluster(spec: str) -> clusters.ClusterConfig:
    name, _, subs = spec.partition("=")
    if not name:
        raise ConfigError("--cluster", f"missing cluster name in {spec!r}")
    if not subs:
        return clusters.minimal(name)
    table: dict[str, str] = {}
    for part in subs.split(";"):
        sub, sep, nodes = part.partition(":")
        if not sep or not sub or not nodes:
            raise ConfigError("--cluster", f"expected SUB:HOSTLIST, got {part!r} in {spec!r}")
        table[sub] = nodes
    try:
        return clusters.minimal(name, table)
    except ValueError as exc:
        raise ConfigError("--cluster", f"{spec!r}: {exc}") from None


def build(args: argparse.Namespace) -> tuple[StandIn, str | None]:
    """The configured stand-in, and the token to write (if ``--write-token``)."""
    configs = clusters.load(args.cluster_config)
    for spec in args.cluster:
        cfg = _parse_cluster(spec)
        configs[cfg.name] = cfg
    if args.example_topologies:
        for doc in topologies.examples():
            cfg = topologies.config(doc)
            configs[cfg.name] = cfg
    if not configs:
        raise ConfigError("command line", "no cluster: give --cluster-config or --cluster")
    backend = Backend(
        configs,
        commit_interval=args.commit_interval,
        legacy_v14=args.legacy_v14,
        nats_mode=args.nats_mode,
        clusters_api=not args.no_clusters_api,
    )
    auth: AuthConfig | None = None
    token = None
    if not args.no_auth:
        if os.environ.get("JWT_PUBLIC_KEY"):
            try:
                auth = AuthConfig.from_env(os.environ)
            except ValueError as exc:
                raise ConfigError("environment", str(exc), "JWT_PUBLIC_KEY") from None
        elif args.write_token:
            auth = AuthConfig.generate()
        else:
            raise ConfigError(
                "command line", "give JWT_PUBLIC_KEY, --write-token FILE, or --no-auth"
            )
        if args.write_token:
            if auth.private_key is None:
                raise ConfigError("environment", "--write-token needs it", "JWT_PRIVATE_KEY")
            token = auth.issue()
    context = None
    if args.tls_cert:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        try:
            context.load_cert_chain(args.tls_cert, args.tls_key)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(args.tls_cert, f"cannot load certificate/key: {exc}") from None
    standin = StandIn(
        backend,
        host=args.host,
        port=args.port,
        ssl_context=context,
        auth=auth,
        allowed_ips=args.allowed_ip,
        gzip=args.gzip,
        request_file=args.request_log,
    )
    return standin, token


async def _run(standin: StandIn) -> None:
    async with trio.open_nursery() as nursery:
        await nursery.start(standin.serve)
        print(f"listening on {standin.url}", flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit status."""
    args = parse_args(argv)
    try:
        standin, token = build(args)
        if token is not None:
            path = Path(args.write_token)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as fh:
                fh.write(token + "\n")
        trio.run(_run, standin)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"error: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    except BaseExceptionGroup as group:  # trio's nurseries wrap what their tasks raise
        leaves = _leaves(group)
        if all(isinstance(e, KeyboardInterrupt) for e in leaves):
            return 0
        os_errors = [e for e in leaves if isinstance(e, OSError)]
        if not os_errors:
            raise
        print(f"error: cannot listen on {args.host}:{args.port}: {os_errors[0]}", file=sys.stderr)
        return 1
    return 0


def _leaves(group: BaseExceptionGroup[BaseException]) -> list[BaseException]:
    out: list[BaseException] = []
    for exc in group.exceptions:
        out.extend(_leaves(exc) if isinstance(exc, BaseExceptionGroup) else [exc])
    return out


if __name__ == "__main__":
    sys.exit(main())
