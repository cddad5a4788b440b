"""CPU and GPU counts of a job from Slurm's TRES: ``numHwthreads`` and ``numAcc`` (pure).

sacct: :func:`tres_counts` (``tres.allocated``, else the requested TRES, else ``required.CPUs``);
squeue/scontrol: :func:`queue_tres_counts` (``tres_alloc_str``, then ``tres_req_str``, then
``cpus``). GPUs are ``gres/gpu``, else the sum of typed ``gres/gpu:TYPE`` entries. Slurm counts
CPUs as hardware threads (an SMT core allocated whole counts its threads), which is what
cc-backend's ``numHwthreads`` means.
"""

from __future__ import annotations

import logging
from functools import lru_cache

from ccsa.errors import SlurmDecodeError
from ccsa.gres import GresError, parse_tres
from ccsa.slurm.sacct import SacctJob, TresRec, TresType, requested_tres
from ccsa.slurm.squeue import QueueJob
from ccsa.slurm.types import NV, num

__all__ = ["queue_tres_counts", "tres_counts"]

log = logging.getLogger(__name__)


def _count(value: int | str | NV) -> int:
    if type(value) is int:
        return value if value > 0 else 0
    if isinstance(value, str):
        return int(value) if value.isascii() and value.isdigit() else 0
    return num(value) or 0


_CPU = TresType.CPU
_GRES = TresType.GRES


def _scan_tres(recs: list[TresRec]) -> tuple[int, int]:
    """(cpu, gpu) of one TRES list: ``gres``/``gpu``, else the sum of typed ``gpu:xxx``."""
    cpus = gpus = typed = 0
    plain = False
    for rec in recs:
        kind = rec.type  # a TresType member: identity comparisons suffice
        if kind is _CPU:
            count = rec.count
            cpus = (count if count > 0 else 0) if type(count) is int else _count(count)
        elif kind is _GRES:
            name = rec.name
            if name == "gpu":
                gpus, plain = _count(rec.count), True
            elif name.startswith("gpu:"):
                typed += _count(rec.count)
    return cpus, (gpus if plain else typed)


def tres_counts(acct: SacctJob) -> tuple[int, int]:
    """(numHwthreads, numAcc) from sacct's TRES.

    A run slurmdbd has recorded lists its ``cpu`` count in ``tres.allocated``: then allocated is
    the whole truth (no GPU entry there means no GPUs). Only when allocated has no ``cpu`` (an
    empty list: slurmdbd has not caught up with a start yet) do the requested TRES stand in,
    and CPUs fall back further to ``required.CPUs``. GPUs: ``gres``/``gpu``, else the sum of
    typed ``gpu:xxx`` entries. A garbled requested list counts as empty (logged, naming the job).
    """
    cpus, gpus = _scan_tres(acct.tres.allocated)
    return (cpus, gpus) if cpus else _requested_counts(acct, gpus)


def _requested_counts(acct: SacctJob, gpus: int) -> tuple[int, int]:
    """tres_counts for a job whose allocated TRES have no ``cpu`` (``gpus``: allocated GPUs)."""
    try:
        requested = requested_tres(acct)
    except SlurmDecodeError as exc:
        log.warning("%s; counted as no requested TRES", exc)
        requested = []
    req_cpus, req_gpus = _scan_tres(requested)
    return req_cpus or num(acct.required.CPUs) or 0, gpus or req_gpus


def queue_tres_counts(queue: QueueJob) -> tuple[int, int]:
    """(cpus, gpus) of a queue job from ``tres_alloc_str``, then ``tres_req_str``, then ``cpus``."""
    cpus = gpus = 0
    for text in (queue.tres_alloc_str, queue.tres_req_str):
        if not text or (cpus and gpus):
            continue
        text_cpus, text_gpus = _tres_text_counts(text)
        cpus = cpus or text_cpus
        gpus = gpus or text_gpus
    return cpus or num(queue.cpus) or 0, gpus


@lru_cache(maxsize=4096)
def _tres_text_counts(text: str) -> tuple[int, int]:
    """(cpu, gres/gpu) of one TRES string, (0, 0) when unparsable (the strings recur per poll)."""
    try:
        tres = parse_tres(text)
    except GresError:
        return 0, 0
    return _plain_int(tres.get("cpu")), _plain_int(tres.get("gres/gpu"))


def _plain_int(value: str | None) -> int:
    return int(value) if value is not None and value.isascii() and value.isdigit() else 0
