"""Parse Slurm's GRES strings, device bitmaps and TRES strings (pure).

Handles every form Slurm prints (slurm-json.md §3.4, §14): per-node job allocations
(``gres_detail[i]``: ``gpu:h100:4(IDX:0-3)``,
multi-type ``gpu:h100:2(IDX:0-1),gpu:h200:4(IDX:2-5)``, ``gpu:h200:0(IDX:)``,
typeless ``gpu:2(IDX:0-1)``, count-only ``gpu(CNT:2)``, shared
``shard:4(2/8,2/8)``), node ``gres`` (``gpu:a100:1(S:1)`` socket affinity) and ``gres_used``
(``gpu:h100:0(IDX:N/A)``, ``gpu:0``), and TRES strings in both the ``key=value`` form
(``tres_alloc_str``) and the request form with ``:`` (``tres_per_job`` ``gres/gpu:8``).

Hand-written because no library parses these Slurm-specific texts; the grammar is small and
each entry is matched with one precompiled, backtracking-free regex. Type names may contain
``_ . -`` and digits (MIG profiles ``1g.10gb``, ``nvidia_a100-sxm4-80gb``). Commas inside
parentheses belong to the entry (``IDX:0-3,5-9``) and do not split entries.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

__all__ = [
    "GresEntry",
    "GresError",
    "gpu_count",
    "gpu_devices",
    "gpu_indices",
    "parse_bitmap",
    "parse_gres",
    "parse_tres",
    "tres_int",
]

#: Largest span one bitmap range may cover; anything bigger is garbage, not a device list.
MAX_BITMAP_SPAN = 1 << 20

# name[:a[:b]][(detail)] where a/b are type and count; components never contain , ( ) :
_ENTRY = re.compile(r"([^,():\s]+)(?::([^,():\s]+))?(?::([^,():\s]+))?(?:\(([^()]*)\))?")
_COUNT = re.compile(r"([0-9]+)([KMGTP]?)")
_RANGE = re.compile(r"([0-9]+)(?:-([0-9]+))?")
_SHARED = re.compile(r"[0-9]+/[0-9]+(?:,[0-9]+/[0-9]+)*")
_SUFFIX = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40, "P": 1 << 50}


class GresError(ValueError):
    """A GRES, bitmap or TRES string does not have any form Slurm prints."""


@dataclass(frozen=True, slots=True)
class GresEntry:
    """One GRES of one name and type, e.g. ``gpu:h100:4(IDX:0-3)``.

    ``indices`` are the device positions in the node's bitmap for this GRES *name* across all
    types (from ``IDX:``); ``()`` when the bitmap is empty or ``N/A``; ``None`` when the string
    carries no device list (``gpu:4``, ``gpu(CNT:2)``, ``gpu:a100:1(S:1)``, shared GRES).
    ``sockets`` is the socket affinity of configured GRES (``(S:0-1)``), else ``None``.
    """

    name: str
    type: str | None
    count: int
    indices: tuple[int, ...] | None
    sockets: tuple[int, ...] | None = None
    #: Shared GRES (``shard``, ``mps``) of a job: units used on each device position of the node
    #: (``shard:4(2/8,0/8,2/8)`` -> ``(2, 0, 2)``; Slurm's ``_build_shared_gres_details`` in
    #: ``src/stepmgr/gres_stepmgr.c`` prints ``used/available`` for every position), else None.
    shared_used: tuple[int, ...] | None = None


def parse_gres(s: str) -> list[GresEntry]:
    """Parse a comma-joined GRES string into entries, in order; ``""`` gives ``[]``."""
    return list(_parse_cached(s))


@lru_cache(maxsize=4096)
def _parse_cached(s: str) -> tuple[GresEntry, ...]:
    """Parsed entries (immutable, so shared); a few distinct strings recur for every job."""
    entries: list[GresEntry] = []
    pos, end = 0, len(s)
    if not s.strip():
        return ()
    while True:
        m = _ENTRY.match(s, pos)
        if m is None or m.end() == pos:
            raise GresError(f"GRES {s!r}: cannot parse at offset {pos}")
        entries.append(_entry(m, s))
        pos = m.end()
        if pos == end:
            return tuple(entries)
        if s[pos] != ",":
            raise GresError(f"GRES {s!r}: unexpected {s[pos]!r} at offset {pos}")
        pos += 1


def _entry(m: re.Match[str], s: str) -> GresEntry:
    name, first, second, detail = m.groups()
    gres_type: str | None = None
    count = 1
    if second is not None:
        gres_type = first
        count = _count(second, s)
    elif first is not None:
        if _COUNT.fullmatch(first):
            count = _count(first, s)
        else:
            gres_type = first
    indices: tuple[int, ...] | None = None
    sockets: tuple[int, ...] | None = None
    shared_used: tuple[int, ...] | None = None
    if detail is not None:
        if detail.startswith("IDX:"):
            bitmap = detail[4:]
            indices = () if bitmap == "N/A" else tuple(_bitmap(bitmap, f"GRES {s!r}"))
        elif detail.startswith("CNT:"):
            count = _count(detail[4:], s)
        elif detail.startswith("S:"):
            sockets = tuple(_bitmap(detail[2:], f"GRES {s!r}"))
        elif _SHARED.fullmatch(detail):
            shared_used = tuple(int(pair.partition("/")[0]) for pair in detail.split(","))
        else:
            raise GresError(f"GRES {s!r}: unknown detail ({detail})")
    return GresEntry(name, gres_type, count, indices, sockets, shared_used)


def _count(text: str, s: str) -> int:
    m = _COUNT.fullmatch(text)
    if m is None:
        raise GresError(f"GRES {s!r}: bad count {text!r}")
    return int(m.group(1)) * _SUFFIX[m.group(2)]


def _bitmap(text: str, where: str) -> list[int]:
    out: list[int] = []
    if not text:
        return out
    for element in text.split(","):
        m = _RANGE.fullmatch(element)
        if m is None:
            raise GresError(f"{where}: bad bitmap element {element!r}")
        lo = int(m.group(1))
        hi = lo if m.group(2) is None else int(m.group(2))
        if lo > hi or hi - lo >= MAX_BITMAP_SPAN:
            raise GresError(f"{where}: bad bitmap range {element!r}")
        out.extend(range(lo, hi + 1))
    return out


def parse_bitmap(s: str) -> list[int]:
    """Expand a Slurm bitmap list such as ``0-3,5-9`` in order; ``""`` gives ``[]``."""
    return _bitmap(s, f"bitmap {s!r}")


def gpu_indices(detail: str) -> list[int]:
    """All device indices of GRES name ``gpu`` (any type) in one ``gres_detail`` string."""
    out: list[int] = []
    for entry in _parse_cached(detail):
        if entry.name == "gpu" and entry.indices:
            out.extend(entry.indices)
    return out


#: Shared GRES names whose devices are GPUs (Slurm's gres/shard and gres/mps plugins).
SHARED_GPU_GRES = frozenset({"shard", "mps"})


def gpu_devices(detail: str) -> list[int]:
    """GPU device positions of one ``gres_detail`` string, in order, each once.

    ``gpu`` entries give their ``IDX`` list (a MIG instance is one ``gpu`` device of its own
    type, e.g. ``gpu:1g.10gb:1(IDX:3)``: the position of the instance among the node's gpu
    devices); ``shard``/``mps`` entries give every position with a non-zero used count
    (``shard:2(0/8,2/8)`` -> ``[1]``: shard position i is the i-th shard line of the node's
    gres.conf, one per GPU in GPU order).
    """
    out: list[int] = []
    for entry in _parse_cached(detail):
        if entry.name == "gpu" and entry.indices:
            out.extend(i for i in entry.indices if i not in out)
        elif entry.name in SHARED_GPU_GRES and entry.shared_used:
            out.extend(i for i, n in enumerate(entry.shared_used) if n > 0 and i not in out)
    return out


def gpu_count(s: str) -> int:
    """Total count of GRES name ``gpu`` (all types) in a GRES string."""
    return sum(e.count for e in _parse_cached(s) if e.name == "gpu")


def parse_tres(s: str) -> dict[str, str]:
    """Parse a TRES string into ``{key: value}``, keys and values as Slurm prints them.

    Accepts ``cpu=2,mem=1G,node=2,billing=2,gres/gpu=8,gres/gpu:h100=8`` and the request syntax
    with ``:`` (``gres/gpu:8``, ``gres/gpu:h100:1``, ``cpu:1``), where the last ``:`` component
    is the count. A key given twice keeps its last value.
    """
    out: dict[str, str] = {}
    if not s.strip():
        return out
    for item in s.split(","):
        key, eq, value = item.partition("=")
        if not eq:
            key, colon, value = item.rpartition(":")
            if not colon or not _COUNT.fullmatch(value):
                raise GresError(f"TRES {s!r}: item {item!r} is neither KEY=VALUE nor KEY:COUNT")
        if not key or not value:
            raise GresError(f"TRES {s!r}: item {item!r} has an empty key or value")
        out[key] = value
    return out


def tres_int(s: str, key: str) -> int | None:
    """The integer value of ``key`` in TRES string ``s``, or None if absent.

    Plain counts come back as they are. ``mem`` with a unit suffix (``512M``, ``1G``) is
    returned in MiB, Slurm's memory unit (``K`` rounds up); a suffix on any other key is a
    binary multiplier (``2K`` -> 2048).
    """
    value = parse_tres(s).get(key)
    if value is None:
        return None
    m = _COUNT.fullmatch(value)
    if m is None:
        raise GresError(f"TRES {s!r}: value of {key!r} is not a number: {value!r}")
    number, unit = int(m.group(1)), m.group(2)
    if not unit:
        return number
    scaled = number * _SUFFIX[unit]
    return -(-scaled // _SUFFIX["M"]) if key == "mem" else scaled
