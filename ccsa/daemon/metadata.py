"""The metadata of new starts: ``scontrol show job`` text and batch scripts, fetched together.

cc-backend shows both in a job's view (``metaData.slurmInfo``, ``metaData.jobScript``). Only jobs
slurmctld still holds have them; the plan says which (`plan.Decision.metadata_ids`). The text of
many jobs comes from ONE ``scontrol show job`` call, split per job; where each script comes from
is `scripts.ScriptSource`'s choice. Both run at once. Missing metadata never blocks a start: a
failure is logged and the start goes out without it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import trio

from ccsa.daemon.plan import Metadata
from ccsa.daemon.scripts import ScriptSource
from ccsa.errors import SlurmError
from ccsa.slurm.commands import Slurm

log = logging.getLogger(__name__)


class MetadataSource:
    """Fetches the `plan.Metadata` of new starts."""

    def __init__(self, slurm: Slurm, scripts: ScriptSource) -> None:
        self.slurm = slurm
        self.scripts = scripts

    async def fetch(
        self, cluster: str, info_ids: Sequence[int], script_ids: Sequence[int], *, sacct: bool
    ) -> Metadata:
        """scontrol text of `info_ids` and scripts of `script_ids` (`ScriptSource.fetch`;
        ``sacct``: may ask ``sacct --batch-script`` first), concurrently."""
        info: dict[int, str] = {}
        scripts: dict[int, str] = {}

        async def get_info() -> None:
            try:
                info.update(await self.slurm.scontrol_show_jobs_text(cluster, info_ids))
            except SlurmError as exc:
                log.warning("%s: no slurmInfo for %d new jobs: %s", cluster, len(info_ids), exc)

        async def get_scripts() -> None:
            scripts.update(await self.scripts.fetch(cluster, script_ids, sacct=sacct))

        async with trio.open_nursery() as nursery:
            if info_ids:
                nursery.start_soon(get_info)
            if script_ids:
                nursery.start_soon(get_scripts)
        return Metadata(info, scripts, frozenset(info_ids), frozenset(script_ids))
