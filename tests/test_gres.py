"""ccsa.gres: every GRES/TRES form Slurm prints, and every such string in the real fixtures."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ccsa.gres import (
    GresEntry,
    GresError,
    gpu_count,
    gpu_indices,
    parse_bitmap,
    parse_gres,
    parse_tres,
    tres_int,
)

E = GresEntry


@pytest.mark.parametrize(
    ("text", "entries"),
    [
        ("", []),
        ("gpu:h100:4(IDX:0-3)", [E("gpu", "h100", 4, (0, 1, 2, 3))]),
        (
            "gpu:h100:2(IDX:0-1),gpu:h200:4(IDX:2-5)",
            [E("gpu", "h100", 2, (0, 1)), E("gpu", "h200", 4, (2, 3, 4, 5))],
        ),
        (
            "gpu:h100:1(IDX:0),gpu:h200:0(IDX:)",
            [E("gpu", "h100", 1, (0,)), E("gpu", "h200", 0, ())],
        ),
        ("gpu:h100:0(IDX:N/A)", [E("gpu", "h100", 0, ())]),
        ("gpu:2(IDX:0-1)", [E("gpu", None, 2, (0, 1))]),
        ("gpu(CNT:2)", [E("gpu", None, 2, None)]),
        ("gpu:h100(CNT:3)", [E("gpu", "h100", 3, None)]),
        ("gpu:1g.10gb:9(IDX:0-3,5-9)", [E("gpu", "1g.10gb", 9, (0, 1, 2, 3, 5, 6, 7, 8, 9))]),
        ("gpu:nvidia_a100-sxm4-80gb:1(IDX:7)", [E("gpu", "nvidia_a100-sxm4-80gb", 1, (7,))]),
        (
            "gpu:nvidia_h100_80gb_hbm3:4(S:0-1)",
            [E("gpu", "nvidia_h100_80gb_hbm3", 4, None, (0, 1))],
        ),
        ("gpu:a100:1(S:1)", [E("gpu", "a100", 1, None, (1,))]),
        ("shard:4(2/8,2/8)", [E("shard", None, 4, None, shared_used=(2, 2))]),
        (
            "shard:a100:4(2/8,2/8),gpu:1(IDX:1)",
            [E("shard", "a100", 4, None, shared_used=(2, 2)), E("gpu", None, 1, (1,))],
        ),
        ("gpu:0", [E("gpu", None, 0, None)]),
        ("gpu:4", [E("gpu", None, 4, None)]),
        ("gpu:h100:2,gpu:h200:4", [E("gpu", "h100", 2, None), E("gpu", "h200", 4, None)]),
        ("gpu", [E("gpu", None, 1, None)]),
        ("mps:100", [E("mps", None, 100, None)]),
        ("bandwidth:lustre:4G", [E("bandwidth", "lustre", 4 << 30, None)]),
    ],
)
def test_parse_gres_forms(text: str, entries: list[GresEntry]) -> None:
    assert parse_gres(text) == entries


@pytest.mark.parametrize(
    "text",
    [
        "gpu:h100:x(IDX:0)",
        "gpu(IDX:a)",
        "gpu:h100:4(IDX:0-3",
        "gpu:h100:4(IDX:3-1)",
        "gpu,,x",
        "gpu:a:b:c",
        "(IDX:1)",
        "gpu(FOO:1)",
        "gpu:1(IDX:0)junk",
        "gpu:1,",
        "gpu:h100:4(IDX:0-99999999999)",
    ],
)
def test_parse_gres_garbage(text: str) -> None:
    with pytest.raises(GresError, match="GRES"):
        parse_gres(text)


@pytest.mark.parametrize(
    ("detail", "indices"),
    [
        ("gpu:h100:2(IDX:0-1),gpu:h200:4(IDX:2-5)", [0, 1, 2, 3, 4, 5]),
        ("gpu:h200:4(IDX:4-7),gpu:h100:2(IDX:0-1)", [4, 5, 6, 7, 0, 1]),
        ("shard:2(1/8),gpu:1(IDX:3)", [3]),
        ("gpu:h100:1(IDX:0),gpu:h200:0(IDX:)", [0]),
        ("gpu(CNT:2)", []),
        ("", []),
    ],
)
def test_gpu_indices(detail: str, indices: list[int]) -> None:
    assert gpu_indices(detail) == indices


@pytest.mark.parametrize(
    ("text", "count"),
    [("gpu:h100:2,gpu:h200:4", 6), ("gpu:0", 0), ("", 0), ("shard:8,gpu(CNT:2)", 2)],
)
def test_gpu_count(text: str, count: int) -> None:
    assert gpu_count(text) == count


@pytest.mark.parametrize(
    ("text", "values"),
    [("", []), ("0-3,5-9", [0, 1, 2, 3, 5, 6, 7, 8, 9]), ("7", [7]), ("3,1", [3, 1])],
)
def test_parse_bitmap(text: str, values: list[int]) -> None:
    assert parse_bitmap(text) == values


@pytest.mark.parametrize("text", ["a", "1-", "-1", "1,,2", "3-1", "N/A", " 1"])
def test_parse_bitmap_garbage(text: str) -> None:
    with pytest.raises(GresError, match="bitmap"):
        parse_bitmap(text)


def test_parse_tres_forms() -> None:
    assert parse_tres("cpu=2,mem=1G,node=2,billing=2,gres/gpu=8,gres/gpu:h100=8") == {
        "cpu": "2",
        "mem": "1G",
        "node": "2",
        "billing": "2",
        "gres/gpu": "8",
        "gres/gpu:h100": "8",
    }
    assert parse_tres("gres/gpu:8") == {"gres/gpu": "8"}
    assert parse_tres("gres/gpu:h100:1,gres/gpu:h200:1") == {
        "gres/gpu:h100": "1",
        "gres/gpu:h200": "1",
    }
    assert parse_tres("cpu:1") == {"cpu": "1"}
    assert parse_tres("") == {}


@pytest.mark.parametrize("text", ["cpu", "=2", "cpu=", "gres/gpu:x", "cpu=1,,mem=2"])
def test_parse_tres_garbage(text: str) -> None:
    with pytest.raises(GresError, match="TRES"):
        parse_tres(text)


@pytest.mark.parametrize(
    ("text", "key", "value"),
    [
        ("cpu=8,mem=4G,node=2,billing=8,gres/gpu=8", "cpu", 8),
        ("cpu=8,mem=4G,node=2,billing=8,gres/gpu=8", "gres/gpu", 8),
        ("cpu=8,mem=4G,node=2", "mem", 4096),
        ("cpu=1,mem=512M", "mem", 512),
        ("mem=1536K", "mem", 2),
        ("cpu=8,mem=4G", "gres/gpu", None),
        ("", "cpu", None),
        ("gres/gpu:12", "gres/gpu", 12),
        ("billing=2K", "billing", 2048),
    ],
)
def test_tres_int(text: str, key: str, value: int | None) -> None:
    assert tres_int(text, key) == value


def test_tres_int_non_numeric() -> None:
    with pytest.raises(GresError, match="'cpu'"):
        tres_int("cpu=lots", "cpu")


GRES_KEYS = {"gres_detail", "gres", "gres_used"}
TRES_KEYS = {"tres_req_str", "tres_alloc_str", "tres_per_job", "tres_per_node", "tres_per_task"}


def _strings(obj: Any, keys: set[str]) -> Iterator[str]:
    if isinstance(obj, dict):
        for key, value in obj.items():
            if key in keys:
                if isinstance(value, str):
                    yield value
                elif isinstance(value, list):
                    yield from (v for v in value if isinstance(v, str))
            yield from _strings(value, keys)
    elif isinstance(obj, list):
        for item in obj:
            yield from _strings(item, keys)


def _documents(shared: Path) -> Iterator[Any]:
    root = shared / "fixtures/slurm"
    for path in sorted(root.rglob("*.json")):
        if "openapi" in path.parts or path.name == "index.json" or "hostlist" in path.parts:
            continue
        yield json.loads(path.read_bytes())


def test_every_fixture_gres_and_tres_string_parses(shared: Path) -> None:
    gres_seen: set[str] = set()
    tres_seen: set[str] = set()
    for doc in _documents(shared):
        gres_seen.update(_strings(doc, GRES_KEYS))
        tres_seen.update(_strings(doc, TRES_KEYS))
    assert any("IDX:" in s for s in gres_seen)
    assert any("=" in s for s in tres_seen)
    gres_failures = []
    for s in sorted(gres_seen):
        try:
            parse_gres(s)
        except GresError as exc:
            gres_failures.append(str(exc))
    tres_failures = []
    for s in sorted(tres_seen):
        try:
            parse_tres(s)
        except GresError as exc:
            tres_failures.append(str(exc))
    assert gres_failures == []
    assert tres_failures == []
    # Cross-check: the gpu count in each per-node detail equals its number of indices.
    for s in gres_seen:
        for entry in parse_gres(s):
            if entry.indices is not None:
                assert len(entry.indices) == entry.count, s
