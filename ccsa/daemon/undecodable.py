"""Slurm records that do not decode (issue #17 item 5): the rest of the answer is synced, each
bad record is named in the log, shown in ``status``, and looked up again on later polls.

Contract: `Undecodable.waits(cluster, command, bad)` turns the `BadRecord`\\ s of one answer into
`plan.Wait` actions keyed ``(cluster, job_id, UNDECODED_START)``: stored with the poll's other
actions (so the watermark may move past them without losing them), their job ids are looked up
by id on every later poll (``sacct -j``), and after `plan.WAIT_LIMIT` they are parked for
``redrive`` like any other wait. Once a job's record decodes, `decoded` drops its wait (the job
is then planned under its real start time). One ERROR line per bad record and field (a record
still bad on the next poll is logged again at DEBUG only). A record without a job id
cannot be looked up: it is logged and shown, and nothing more can be done for it.
The records of the cluster's last poll are kept for ``status`` (`last`).
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field

from ccsa.daemon import plan
from ccsa.daemon.plan import JobKey, KnownJob
from ccsa.daemon.store import Store
from ccsa.slurm.stream import BadRecord

__all__ = ["UNDECODED_START", "Undecodable", "without_waits"]

log = logging.getLogger(__name__)

#: The start time of a wait for a record that did not decode (its real one is unknown).
UNDECODED_START = 0


@dataclass
class Undecodable:
    """The bad records seen per cluster (see the module docstring)."""

    #: per cluster: "sacct job 123: time.start: Expected `int`, got `str`" lines of
    #: the answers read since `begin` (the last poll), for ``status``
    last: dict[str, list[str]] = field(default_factory=dict)
    _logged: set[tuple[str, str, int | None, str]] = field(default_factory=set)

    def begin(self, cluster: str) -> None:
        """A new poll of ``cluster`` starts: forget the previous poll's list."""
        self.last[cluster] = []

    def waits(self, cluster: str, command: str, bad: Sequence[BadRecord]) -> list[plan.Wait]:
        """Log and note ``bad`` (from ``command``'s answer); the waits to store for them."""
        out: list[plan.Wait] = []
        for record in bad:
            line = f"{command} {record.describe()}"
            seen = self.last.setdefault(cluster, [])
            if line not in seen:
                seen.append(line)
            first = (cluster, command, record.job_id, record.field) not in self._logged
            self._logged.add((cluster, command, record.job_id, record.field))
            if record.job_id is None:
                log.log(
                    logging.ERROR if first else logging.DEBUG,
                    "%s: %s: a record without a job id does not decode and cannot be looked "
                    "up again; the other jobs are synced",
                    cluster, line,
                )  # fmt: skip
                continue
            log.log(
                logging.ERROR if first else logging.DEBUG,
                "%s: %s: the record does not decode; the other jobs are synced and job %d is "
                "looked up again on later polls",
                cluster, line, record.job_id,
            )  # fmt: skip
            key = JobKey(cluster, record.job_id, UNDECODED_START)
            why = f"{command} record does not decode: {record.field or 'the record'}: "
            out.append(plan.Wait(key, why + record.reason))
        return out

    @staticmethod
    def decoded(store: Store, cluster: str, ids: Collection[int]) -> None:
        """Drop the waits of records that did not decode before and did now (their ids)."""
        waiting = store.waiting_ids(cluster)
        if waiting:
            store.drop_waits(cluster, [i for i in waiting if i in ids], UNDECODED_START)


def without_waits(known: Mapping[tuple[int, int], KnownJob]) -> dict[tuple[int, int], KnownJob]:
    """``known`` without the waits of undecodable records: not a run of the job to plan with."""
    return {k: v for k, v in known.items() if k[1] != UNDECODED_START}
