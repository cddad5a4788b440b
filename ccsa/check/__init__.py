"""`cc-slurm-adapter check`: tell an administrator what works, what does not, and how to fix it.

Runs every external dependency once, the way the daemon will use it and as the user running the
command (the service user; no root assumptions): the Slurm commands (version, data_parser,
cluster names), Operator rights (judged with ``PrivateData`` and ``SlurmUser`` from ``scontrol
show config``), cc-backend with the JWT (a 401 is explained from the token's own claims, decoded
without verifying and never printed), the cluster names in cc-backend (``GET /api/clusters/``),
NATS, the PrEp socket directory's permissions for the ``slurm`` group, and the ``gpuPciAddrs``
regexes against the GPU nodes ``sinfo`` reports.

Layout: `findings` (the `Finding` row, exit status, `render`), `rules` (pure decisions),
`probes` (the row producers, `PRODUCERS`: append one to add a check). Exit status 0 only when
no finding is a failure.
"""

from __future__ import annotations

import getpass
import sys
import time
from collections.abc import Callable, Sequence

import trio

from ccsa.check.findings import Finding, Level, exit_status, render
from ccsa.check.probes import PRODUCERS, CheckContext, RowProducer
from ccsa.config import Config
from ccsa.daemon.pipeline import slurm_for

__all__ = [
    "PRODUCERS",
    "CheckContext",
    "Finding",
    "Level",
    "RowProducer",
    "check_command",
    "exit_status",
    "render",
    "run_checks",
]


async def run_checks(
    cfg: Config,
    *,
    user: str | None = None,
    slurm_group: str = "slurm",
    nats_timeout: float = 5.0,
    now: Callable[[], float] = time.time,
    producers: Sequence[RowProducer] = PRODUCERS,
) -> list[Finding]:
    """Run every producer once, in order, and return the findings (never raises for a broken
    dependency)."""
    ctx = CheckContext(
        cfg,
        user=user or getpass.getuser(),
        slurm_group=slurm_group,
        nats_timeout=nats_timeout,
        now=now,
        slurm=slurm_for(cfg),
    )
    findings: list[Finding] = []
    for produce in producers:
        findings += await produce(ctx)
    return findings


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
