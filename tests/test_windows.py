"""How a long poll window is cut into sub-windows (pure; `ccsa.daemon.windows`)."""

from __future__ import annotations

import itertools
import math
import random

from hypothesis import given, settings
from hypothesis import strategies as st

from ccsa.daemon.windows import SubWindows

H = 3600.0


def walk(
    parts: SubWindows, begin: float, end: float, jobs: list[tuple[float, float]]
) -> list[tuple[float, float, int]]:
    """Cut [begin, end] the way `Syncer.tick` does, against synthetic jobs (eligible, end):
    each sub-window "returns" what sacct would (every job whose span touches it)."""
    out: list[tuple[float, float, int]] = []
    span = parts.first
    lo = begin
    while True:
        hi = parts.cut(lo, end, span)
        answer = [(e, x) for e, x in jobs if e <= hi and x >= lo]
        out.append((lo, hi, len(answer)))
        if hi >= end:
            return out
        fresh = sum(1 for e, _ in answer if e >= lo)
        carried = sum(1 for _, x in answer if x >= hi)
        span = parts.next_span(span, fresh=fresh, carried=carried)
        lo = hi


def test_a_normal_poll_is_one_sub_window() -> None:
    parts = SubWindows(first=2 * 360.0)
    assert parts.cut(1000.0, 1360.0, parts.first) == 1360.0  # slurmPollInterval 60 + overlap 300
    assert parts.cut(1000.5, 2080.5, parts.first) == 2080.5  # a slow tick (1.5 x first)
    assert parts.cut(1000.5, 2081.0, parts.first) == 1720.0  # beyond: cut at a whole second


def test_span_follows_the_density_of_the_last_answer() -> None:
    parts = SubWindows(first=H, longest=8 * H, shortest=60.0, target=1000)
    assert parts.next_span(H, fresh=0, carried=0) == 2 * H  # nothing seen: grow, at most 2x
    assert parts.next_span(4 * H, fresh=0, carried=0) == 8 * H
    assert parts.next_span(8 * H, fresh=0, carried=0) == 8 * H  # capped
    assert parts.next_span(H, fresh=4000, carried=0) == H / 4  # 4x too many: a quarter as long
    assert parts.next_span(H, fresh=4000, carried=500) == H / 8  # half the budget is carried
    # carried jobs come back whatever the length: once they dominate, as many new ones again
    assert parts.next_span(H, fresh=1000, carried=700) == H / 1000 * 700
    assert parts.next_span(4 * H, fresh=1000, carried=1500) == 6 * H
    assert parts.next_span(H, fresh=10**9, carried=0) == 60.0  # never below the shortest
    # the first sub-window may be longer than `longest` (a slow poll interval): it is the cap
    slow = SubWindows(first=10 * H, longest=6 * H)
    assert slow.next_span(10 * H, fresh=1, carried=0) == 10 * H
    assert slow.next_span(10 * H, fresh=4000, carried=0) == 5 * H


@settings(deadline=None)  # tests are never timing asserts (2 shared cores)
@given(
    begin=st.floats(1e9, 2e9),
    length=st.floats(0, 30 * 86400),
    first=st.floats(60, 86400),
    density=st.lists(st.integers(0, 10**5), min_size=1, max_size=50),
)
def test_sub_windows_cover_the_window_exactly(
    begin: float, length: float, first: float, density: list[int]
) -> None:
    parts = SubWindows(first=first)
    end = begin + length
    span, lo, pieces = first, begin, []
    while True:
        hi = parts.cut(lo, end, span)
        assert lo < hi or hi == end
        pieces.append((lo, hi))
        if hi >= end:
            break
        assert hi == int(hi)  # inner boundaries are whole seconds (sacct's resolution)
        n = density[len(pieces) % len(density)]
        span = parts.next_span(span, fresh=n, carried=n // 3)
        assert parts.shortest <= span <= max(parts.longest, first)
        lo = hi
    assert pieces[0][0] == begin
    assert pieces[-1][1] == end
    assert all(a[1] == b[0] for a, b in itertools.pairwise(pieces))
    assert len(pieces) <= length / parts.shortest + 2


def test_backlog_after_a_quiet_stretch_stays_near_the_target() -> None:
    """The benchmark's shape: a week's window, jobs only in its last day (100/h, 10 min each).
    No answer holds more than `longest` of jobs (the answers that straddle the quiet-to-busy
    edge under-estimate the density); after those two the answers stay near the target; the
    quiet days cost few calls."""
    rng = random.Random(7)
    end = 7 * 86400.0
    jobs = [(t, t + 600) for t in (rng.uniform(end - 86400, end) for _ in range(2400))]
    parts = SubWindows(first=H, longest=6 * H, target=300)
    pieces = walk(parts, 0.0, end, jobs)
    sizes = [n for _, _, n in pieces]
    busy = sizes.index(next(n for n in sizes if n))
    assert max(sizes) <= 6 * 100 * 1.2  # `longest` at 100 jobs/h, give or take
    assert max(sizes[busy + 2 :]) <= 1.5 * parts.target
    assert sum(n for _, _, n in pieces) < 1.1 * len(jobs)  # few jobs are read twice
    quiet = [p for p in pieces if p[1] <= end - 86400]
    assert len(quiet) <= 6 * 24 / 6 + 3  # the quiet days: about one call per `longest`
    assert pieces[-1][1] == end


def test_a_deep_pending_queue_is_not_read_over_and_over() -> None:
    """An oversubscribed cluster (the 50k-job benchmark): every answer holds the whole pending
    queue, which grows to 13k jobs. Shrinking the sub-windows cannot make the answers smaller,
    only more numerous; the walk reads the records at most ~2x and makes few calls."""
    end = 36 * H
    finished = [(t, t + 60.0) for t in range(0, int(end), 10)]  # 360 jobs/h, done at once
    pending = [(t + 5.0, math.inf) for t in range(0, int(end), 10)]  # 360/h, never start
    jobs = finished + pending
    parts = SubWindows(first=H, longest=6 * H, target=2000)
    pieces = walk(parts, 0.0, end, jobs)
    read = sum(n for _, _, n in pieces)
    assert read <= 2.5 * len(jobs)
    assert len(pieces) <= 20
    assert max(n for _, _, n in pieces) <= 2 * len(pending) + parts.target


def test_density_jump_and_long_runners() -> None:
    """10 jobs/h, then 1000/h; 400 jobs run through the whole window (always carried)."""
    rng = random.Random(3)
    end = 2 * 86400.0
    jobs = [(t, t + 300) for t in (rng.uniform(0, 86400) for _ in range(240))]
    jobs += [(t, t + 300) for t in (rng.uniform(86400, end) for _ in range(24000))]
    jobs += [(-1.0, end + 1)] * 400
    parts = SubWindows(first=H, longest=6 * H, target=1000)
    pieces = walk(parts, 0.0, end, jobs)
    busy = [n for lo, _, n in pieces if lo >= 86400]
    # the first busy answer is as big as the span chosen in the quiet day allows; then the
    # span shrinks to what the density allows
    assert max(busy[1:]) <= 1.5 * parts.target
    assert len(pieces) < 80
    assert pieces[-1][1] == end


def test_a_timed_out_sub_window_is_read_in_quarters_down_to_the_shortest() -> None:
    parts = SubWindows(first=H, shortest=60.0)
    assert parts.after_timeout(H) == H / 4
    assert parts.after_timeout(200.0) == 60.0
    assert parts.after_timeout(60.0) is None  # the window is not the problem any more
