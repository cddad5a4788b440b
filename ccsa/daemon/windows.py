"""A poll's sacct window and how a long one is cut into sub-windows (pure).

`poll_window` says which stretch of time the next poll of a cluster reads: from its watermark
(minus an overlap) to now, capped at ``slurmQueryMaxSpan``. `SubWindows` cuts a long window (a
backlog after downtime, the first sync) into consecutive sub-windows sized by the job density
seen so far (`density`), so one ``sacct`` answer (the daemon's peak memory) stays small while a
normal poll remains one call.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from ccsa import convert
from ccsa.slurm.sacct import SacctJob


def poll_window(
    now: float,
    watermark: float | None,
    *,
    overlap: float,
    max_span: float,
    initial_start: Callable[[], float] | None,
) -> tuple[float, float, float]:
    """(start, end, seconds skipped by the `max_span` cap) of a cluster's next poll.

    A cluster without a watermark starts at `initial_start()` (see docs/daemon.md), else
    `max_span` back.
    """
    end = now
    if watermark is None:
        begin = initial_start() if initial_start else end - max_span
    else:
        begin = watermark - overlap
    begin = min(begin, end)
    skipped = 0.0
    if end - begin > max_span:
        skipped = end - max_span - begin
        begin = end - max_span
    return begin, end, skipped


#: Default length of a poll's first sub-window (seconds).
FIRST_SUB_WINDOW = 3600.0


@dataclass(frozen=True, slots=True)
class SubWindows:
    """How a long poll window is cut into consecutive sub-windows, one ``sacct`` call each.

    An answer is decoded job by job (`ccsa.slurm.stream`), but the decoded views and the plan
    still grow with the jobs one sacct call returns (the first sync of a 10k-job backlog in
    ONE call peaked at ~300 MiB before that). Job density is unknown and uneven (an idle week,
    then a busy day), so each sub-window's length is chosen from the previous one's answer
    (`next_span`) and capped (`longest`): the cap bounds the damage when a long quiet stretch
    ends in a busy one. A Slurm that ignores the window (`beyond`) is read once per poll.

    Args:
        first: length of the first sub-window. A window at most `SLACK` times this long is ONE
            call, so a normal poll (window ~ slurmPollInterval + overlap) is never split.
        longest: upper bound of any later sub-window.
        shortest: lower bound (a burst of jobs eligible within one second cannot be split).
        target: job records one sub-window should return.
    """

    first: float = FIRST_SUB_WINDOW
    longest: float = 6 * 3600.0
    shortest: float = 60.0
    target: int = 2000

    #: The last sub-window may be this much longer than planned instead of leaving a short tail.
    SLACK = 1.5

    def cut(self, begin: float, end: float, span: float) -> float:
        """End of the sub-window that starts at `begin` (`end` when the rest fits in one).

        Inner boundaries are whole seconds: sacct takes whole seconds, so consecutive
        sub-windows share their boundary second instead of leaving a gap.
        """
        if end - begin <= span * self.SLACK:
            return end
        return float(max(int(begin + span), int(begin) + 1))

    def after_timeout(self, span: float) -> float | None:
        """Length to read again a sub-window of length `span` whose sacct did not answer within
        slurmCommandTimeout (sacct's time grows with the records it returns: a lost state
        database or a long outage makes the first window of a busy cluster too full to answer);
        None once it is `shortest` already (then the timeout is Slurm's problem, not the
        window's). A quarter each time: a window 10x too full costs two timeouts, not four."""
        if span <= self.shortest:
            return None
        return max(self.shortest, span / 4)

    def next_span(self, span: float, *, fresh: int, carried: int) -> float:
        """Length of the next sub-window after one of length `span` returned `fresh` records
        that became eligible inside it, and `carried` records still active at its end.

        sacct returns every job active at some moment of the window, so the next answer holds
        about ``carried + rate * span'`` records (``rate = fresh / span``): solve for
        ``target``. Carried records (a deep pending queue, long jobs) come back in every answer
        whatever its length: once they alone approach the target, shrinking would only read
        them again and again (a 50k-job backlog with an 18k-job queue read 18x its size), so
        the new records may then match the carried ones (at most 2x the unavoidable answer,
        and at most 2x the minimal reading). Growth is at most 2x per step.
        """
        budget = max(self.target - carried, carried)
        want = span * 2 if fresh <= 0 else span * budget / fresh
        return max(self.shortest, min(want, span * 2, max(self.longest, self.first)))


def density(accts: Sequence[SacctJob], begin: float, end: float) -> tuple[int, int]:
    """(records submitted inside [begin, end], records still active at `end`).

    sacct's window holds every job whose (eligible .. end) span touches it: the first count
    grows with the window's length, the second comes back in the next window whatever its
    length (`SubWindows.next_span`). The submit time stands in for the eligible time (the
    same, except for ``--begin`` jobs).
    """
    fresh = carried = 0
    for acct in accts:
        t = acct.time
        since = convert.timestamp(t.submission) or convert.timestamp(t.start)
        if since is None or since >= begin:
            fresh += 1
        until = convert.timestamp(t.end)
        if until is None or until >= end:
            carried += 1
    return fresh, carried


def beyond(accts: Sequence[SacctJob], end: float, margin: float = 300.0) -> int:
    """Records eligible (submitted) more than `margin` seconds after the window's `end`.

    ``sacct -E END`` never returns such a job: any at all means this Slurm (or a wrapper in
    front of it) ignores the window and answers with every job up to the moment it ran, so
    that one answer covers the whole rest of the poll's window (issue #19). The margin
    absorbs a slurmctld clock ahead of this host's.
    """
    count = 0
    for acct in accts:
        since = convert.timestamp(acct.time.submission)
        if since is not None and since > end + margin:
            count += 1
    return count


def as_datetime(epoch: float) -> datetime:
    """The whole second of `epoch` as an aware UTC datetime (sacct's resolution)."""
    return datetime.fromtimestamp(int(epoch), UTC)


def utc(epoch: float) -> str:
    """`epoch` as ``YYYY-MM-DDTHH:MM:SS`` UTC, for log lines."""
    return as_datetime(epoch).strftime("%Y-%m-%dT%H:%M:%S")
