"""The backfill's progress: a rich bar on a terminal, one plain line per chunk otherwise."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, TextIO

from ccsa.backfill.window import utc

if TYPE_CHECKING:
    from rich.progress import TaskID

__all__ = ["ChunkLine", "PlainReporter", "Reporter", "RichReporter"]


class Reporter(Protocol):
    def start(self, total_seconds: float) -> None: ...

    def chunk(self, cluster: str, window: tuple[float, float], line: ChunkLine) -> None: ...

    def close(self) -> None: ...


@dataclass(frozen=True, slots=True)
class ChunkLine:
    """What one chunk did and where the walk is."""

    jobs: int
    starts: int
    stops: int
    delivered: int
    done_seconds: float
    total_seconds: float
    elapsed: float

    @property
    def fraction(self) -> float:
        return self.done_seconds / self.total_seconds if self.total_seconds > 0 else 1.0

    @property
    def rate(self) -> float:
        return self.delivered / self.elapsed if self.elapsed > 0 else 0.0

    @property
    def eta(self) -> float | None:
        f = self.fraction
        return None if f <= 0 else self.elapsed * (1 - f) / f


class PlainReporter:
    """One line per chunk (logs, cron, pipes)."""

    def __init__(self, out: TextIO) -> None:
        self.out = out

    def start(self, total_seconds: float) -> None:
        self.out.write(f"backfill: {total_seconds / 86400:.1f} cluster-days to walk\n")

    def chunk(self, cluster: str, window: tuple[float, float], line: ChunkLine) -> None:
        eta = "?" if line.eta is None else f"{line.eta:.0f} s"
        self.out.write(
            f"{cluster} {utc(window[0])}..{utc(window[1])}: {line.jobs} jobs, "
            f"{line.starts} starts / {line.stops} stops queued; {line.delivered} delivered "
            f"({line.rate:.1f}/s); {line.fraction:.0%} done, ETA {eta}\n"
        )
        self.out.flush()

    def close(self) -> None:
        self.out.flush()


class RichReporter:
    """A rich progress bar: window covered, jobs, delivery rate, ETA."""

    def __init__(self, out: TextIO) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            TextColumn("{task.percentage:>3.0f}%"),
            TextColumn("{task.fields[jobs]} jobs, {task.fields[delivered]} sent"),
            TextColumn("{task.fields[rate]:.1f}/s"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=Console(file=out),
        )
        self.task: TaskID | None = None
        self.jobs = 0

    def start(self, total_seconds: float) -> None:
        self.progress.start()
        self.task = self.progress.add_task(
            "backfill", total=total_seconds, jobs=0, delivered=0, rate=0.0
        )

    def chunk(self, cluster: str, window: tuple[float, float], line: ChunkLine) -> None:
        self.jobs += line.jobs
        if self.task is None:  # chunk() before start(): nothing to draw on
            return
        self.progress.update(
            self.task,
            completed=line.done_seconds,
            description=f"{cluster} {utc(window[1])[:10]}",
            jobs=self.jobs,
            delivered=line.delivered,
            rate=line.rate,
        )

    def close(self) -> None:
        self.progress.stop()
