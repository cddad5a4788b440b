"""Benchmark: NATS publish throughput of ``ccsa.natsbus.publisher.Publisher`` (job events/s).

Starts a real ``nats-server`` on a free loopback port (``tests/nats_server.py``), encodes real
start events with ``lineproto.encode_start`` and publishes them three ways: one at a time (each
confirmed by a server round trip before the next), from 32 concurrent trio tasks (how the
daemon's delivery workers publish), and with ``publish_many`` in batches of 200 (an outbox
drain). A plain nats-py subscriber counts what arrived, so no mode can cheat by dropping.
Target: >= 5,000 job events/s (a burst of thousands of starts a minute is ~100/s).

Run: ``python benchmarks/bench_nats.py [--events N]``; ``run()`` returns the numbers as a dict.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import trio

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from nats_server import NatsServer  # type: ignore[import-not-found,unused-ignore]

from ccsa.ccbackend.models import Resource, StartJob
from ccsa.natsbus.lineproto import encode_start
from ccsa.natsbus.publisher import Publisher

TARGET = 5000.0
SUBJECT = "cc.job.event"


def _events(count: int) -> list[bytes]:
    return [
        encode_start(
            StartJob(
                job_id=100000 + i,
                cluster="fritz",
                user="alice",
                project="proj1",
                num_nodes=2,
                resources=[
                    Resource(hostname=f"f{n:04d}", hwthreads=list(range(72))) for n in (i, i + 1)
                ],
                start_time=1_700_000_000 + i,
                shared="none",
                partition="singlenode",
                num_hwthreads=144,
                walltime=86400,
                meta_data={"jobScript": "#!/bin/bash\n#SBATCH -N 2\nsrun ./app\n" * 5},
            ),
            hostname="slurmctl01",
        )
        for i in range(count)
    ]


class _Counter:
    """nats-py subscriber on its own thread that counts received messages."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.count = 0
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()), daemon=True)

    async def _main(self) -> None:
        import nats

        self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
        nc = await nats.connect(self.url)

        async def on_msg(_: Any) -> None:
            self.count += 1

        await nc.subscribe(SUBJECT, cb=on_msg, pending_msgs_limit=-1, pending_bytes_limit=-1)
        await nc.flush()
        self._ready.set()
        await self._stop.wait()
        await nc.close()

    def start(self) -> None:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("counting subscriber did not connect")

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)


async def _measure(url: str, events: list[bytes]) -> dict[str, float]:
    rates: dict[str, float] = {}
    async with Publisher(url, subject=SUBJECT) as pub:
        await pub.wait_connected(10)

        sequential = events[: max(1, len(events) // 4)]
        start = time.perf_counter()
        for line in sequential:
            await pub.publish(line)
        rates["sequential"] = len(sequential) / (time.perf_counter() - start)

        tasks = 32
        start = time.perf_counter()

        async def worker(part: list[bytes]) -> None:
            for line in part:
                await pub.publish(line)

        async with trio.open_nursery() as nursery:
            for k in range(tasks):
                nursery.start_soon(worker, events[k::tasks])
        rates["concurrent_32"] = len(events) / (time.perf_counter() - start)

        start = time.perf_counter()
        for k in range(0, len(events), 200):
            await pub.publish_many(events[k : k + 200])
        rates["batch_200"] = len(events) / (time.perf_counter() - start)
    return rates


def _server_version(binary: str) -> str:
    out = subprocess.run([binary, "--version"], capture_output=True, text=True, check=False)
    return out.stdout.strip() or out.stderr.strip()


def run(events: int = 10000) -> dict[str, Any]:
    """Publish ``events`` job events per mode to a fresh nats-server; return rates (msgs/s)."""
    lines = _events(events)
    with tempfile.TemporaryDirectory() as tmp, NatsServer(Path(tmp)) as server:
        counter = _Counter(server.url)
        counter.start()
        try:
            rates = trio.run(_measure, server.url, lines)
            deadline = time.monotonic() + 10
            expected = len(lines) // 4 + 2 * len(lines)
            while counter.count < expected and time.monotonic() < deadline:
                time.sleep(0.05)
            received = counter.count
        finally:
            counter.stop()
        version = _server_version(server.binary)
    best = max(rates["concurrent_32"], rates["batch_200"])
    return {
        "events": events,
        "bytes_per_event": sum(map(len, lines)) // len(lines),
        "rates_msgs_per_s": {k: round(v) for k, v in rates.items()},
        "received": received,
        "expected": expected,
        "target_msgs_per_s": TARGET,
        "target_met": best >= TARGET and received == expected,
        "machine": {
            "python": platform.python_version(),
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "nats_server": version,
        },
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=10000)
    result = run(parser.parse_args().events)
    print(f"command: {result['command']}")
    for key, value in result["machine"].items():
        print(f"{key:12} {value}")
    print(f"{'events':12} {result['events']} x {result['bytes_per_event']} bytes")
    print()
    print(f"| {'mode':14} | {'msgs/s':>8} |")
    print(f"| {'-' * 14} | {'-' * 8}:|")
    for mode, rate in result["rates_msgs_per_s"].items():
        print(f"| {mode:14} | {rate:>8} |")
    print()
    print(
        f"received {result['received']}/{result['expected']}; target >= {TARGET:.0f}/s: "
        f"{'met' if result['target_met'] else 'NOT met'}"
    )
    sys.exit(0 if result["target_met"] else 1)


if __name__ == "__main__":
    main()
