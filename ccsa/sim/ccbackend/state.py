"""The stand-in's cc-backend v1.5.4 model: jobs, ``job_cache``, start/stop/list/nodestate rules.

No sockets: ``Backend`` takes raw request bytes and returns a ``Reply`` (status, exact body), so
the HTTP server (``server.py``) and the NATS consumer drive the same logic. The rules and the
message texts are those of the shared ``docs/ccbackend.md`` §2–§6 (section numbers in comments).
Time comes from the injected ``clock`` (epoch seconds) so tests control durations, the 86400-s
duplicate window and the commit interval. All public methods hold one lock, so a NATS consumer
running on another thread may call them too.
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any, Literal

from ccsa.sim.ccbackend.clusters import ClusterConfig
from ccsa.sim.ccbackend.godecode import DecodeError, Spec, decode, go_json

__all__ = [
    "DUPLICATE_WINDOW",
    "Backend",
    "Event",
    "Offender",
    "Reply",
    "Report",
    "StoredJob",
    "error_reply",
]

#: §2.2 step 5 / §6: a start within this many seconds (signed) of a committed job is a duplicate.
DUPLICATE_WINDOW = 86400

#: §3.3: ``schema.JobState.Valid()`` on v1.5 (also the DB CHECK). Deliberately written out
#: here rather than imported from ``ccsa.ccbackend.models``: the stand-in models cc-backend
#: independently, so a wrong assumption in ccsa's own list shows up as a test failure.
VALID_STATES_V15 = frozenset(
    {
        "boot_fail",
        "cancelled",
        "completed",
        "deadline",
        "failed",
        "node_fail",
        "out_of_memory",
        "pending",
        "preempted",
        "running",
        "suspended",
        "timeout",
    }
)
#: §3.3: the ≤v1.4 list.
VALID_STATES_V14 = frozenset(
    {"running", "completed", "failed", "cancelled", "stopped", "timeout", "preempted"}
    | {"out_of_memory"}
)
_SHARED = ("none", "single_user", "multi_user")

_RESOURCE: Spec = (
    "struct",
    "schema.Resource",
    {
        "hostname": "string",
        "hwthreads": ("list", "[]int", "int"),
        "accelerators": ("list", "[]string", "string"),
        "configuration": "string",
    },
)
_TAG: Spec = (
    "struct",
    "schema.Tag",
    {"id": "int64", "type": "string", "name": "string", "scope": "string"},
)
#: §2.1: the keys of cc-lib v2 ``schema.Job`` with their Go types.
JOB_FIELDS: dict[str, Spec] = {
    "id": "int64",
    "submitTime": "int64",
    "requestedMemory": "int64",
    "jobId": "int64",
    "arrayJobId": "int64",
    "startTime": "int64",
    "walltime": "int64",
    "duration": "int32",
    "numNodes": "int32",
    "numHwthreads": "int32",
    "numAcc": "int32",
    "smt": "int32",
    "monitoringStatus": "int32",
    "cluster": "string",
    "subCluster": "string",
    "partition": "string",
    "project": "string",
    "user": "string",
    "shared": "string",
    "jobState": "schema.JobState",
    "resources": ("list", "[]*schema.Resource", _RESOURCE),
    "metaData": ("map", "map[string]string", "string"),
    "tags": ("list", "[]*schema.Tag", _TAG),
    "energy": "float64",
    "energyFootprint": ("map", "map[string]float64", "float64"),
    "footprint": ("map", "map[string]float64", "float64"),
    "statistics": ("map", "map[string]schema.JobStatistics", "any"),
    "concurrentJobs": (
        "struct",
        "schema.JobLinkResultList",
        {"items": ("list", "[]*schema.JobLink", "any"), "count": "int"},
    ),
}
#: §3.1: ``api.StopJobAPIRequest``.
STOP_FIELDS: dict[str, Spec] = {
    "jobId": "*int64",
    "cluster": "string",
    "startTime": "*int64",
    "jobState": "schema.JobState",
    "stopTime": "int64",
}
# "*int64" decodes like int64 (null = absent).
STOP_FIELDS = {k: ("int64" if v == "*int64" else v) for k, v in STOP_FIELDS.items()}
_NODE: Spec = (
    "struct",
    "schema.NodePayload",
    {
        "hostname": "string",
        "states": ("list", "[]string", "string"),
        "cpusAllocated": "int",
        "memoryAllocated": "int64",
        "gpusAllocated": "int",
        "jobsRunning": "int",
    },
)
#: §5: ``api.UpdateNodeStatesRequest``.
NODESTATE_FIELDS: dict[str, Spec] = {
    "nodes": ("list", "[]schema.NodePayload", _NODE),
    "cluster": "string",
}

_QUERY_KEYS = frozenset(
    {"state", "cluster", "project", "start-time", "page", "items-per-page", "with-metadata"}
)


@dataclass(frozen=True, slots=True)
class Reply:
    """One answer: HTTP status, exact body bytes, content type ("" = no Content-Type header)."""

    status: int
    body: bytes
    content_type: str = "application/json"

    @property
    def error(self) -> str | None:
        """cc-backend's ``error`` text, when the body is an error body."""
        if self.status < 400 or not self.body.startswith(b"{"):
            return None
        try:
            value = json.loads(self.body).get("error")
        except ValueError:
            return None
        return value if isinstance(value, str) else None


def error_reply(status: int, message: str) -> Reply:
    """§1.4: ``{"status":"<StatusText>","error":"<msg>"}\\n`` (struct order: status, error)."""
    text = HTTPStatus(status).phrase
    body = '{"status":' + go_json(text) + ',"error":' + go_json(message) + "}\n"
    return Reply(status, body.encode())


_NOT_FOUND = {"error": "the requested endpoint does not exist", "status": "Resource not found"}


def map_reply(status: int, values: Mapping[str, str]) -> Reply:
    """A Go ``map[string]string`` body: keys sorted, newline-terminated (401, generic 404)."""
    return Reply(status, (go_json(dict(sorted(values.items()))) + "\n").encode())


@dataclass(slots=True, eq=False)
class StoredJob:
    """One row of ``job_cache`` (``committed=False``) or ``job`` (``committed=True``)."""

    db_id: int
    committed: bool
    job_id: int
    cluster: str
    sub_cluster: str
    start_time: int
    user: str
    project: str
    partition: str
    shared: str
    state: str
    duration: int
    walltime: int
    num_nodes: int
    num_hwthreads: int
    num_acc: int
    smt: int
    monitoring_status: int
    array_job_id: int
    resources: list[dict[str, Any]]
    meta_data: dict[str, str] | None
    tags: list[dict[str, Any]] = field(default_factory=list)
    energy: float = 0.0
    energy_footprint: dict[str, float] | None = None
    footprint: dict[str, float] | None = None
    statistics: dict[str, Any] | None = None

    @property
    def key(self) -> tuple[int, str, int]:
        """The identity triple (jobId, cluster, startTime) of §6."""
        return (self.job_id, self.cluster, self.start_time)

    def to_json(self, now: float, *, with_metadata: bool) -> dict[str, Any]:
        """The job object in v1.5's key order (§4.3); running: ``duration = now - start``."""
        duration = self.duration
        if self.state == "running":
            duration = int(now) - self.start_time
        out: dict[str, Any] = {"cluster": self.cluster, "subCluster": self.sub_cluster}
        if self.partition:
            out["partition"] = self.partition
        out |= {
            "project": self.project,
            "user": self.user,
            "shared": self.shared,
            "jobState": self.state,
        }
        if self.tags:
            out["tags"] = self.tags
        out["resources"] = [_resource_json(r) for r in self.resources]
        out["energyFootprint"] = self.energy_footprint
        out["footprint"] = self.footprint
        meta = dict(sorted(self.meta_data.items())) if self.meta_data is not None else None
        out["metaData"] = meta if with_metadata else None
        out["concurrentJobs"] = {"items": None, "count": 0}
        out["energy"] = _go_float(self.energy)
        if self.array_job_id:
            out["arrayJobId"] = self.array_job_id
        if self.walltime:
            out["walltime"] = self.walltime
        out["jobId"] = self.job_id
        out["duration"] = duration
        for key, value in (
            ("smt", self.smt),
            ("monitoringStatus", self.monitoring_status),
            ("numAcc", self.num_acc),
            ("numHwthreads", self.num_hwthreads),
        ):
            if value:
                out[key] = value
        out["numNodes"] = self.num_nodes
        out["statistics"] = self.statistics
        out["id"] = self.db_id
        out["startTime"] = self.start_time
        return out


def _go_float(value: float) -> float | int:
    return int(value) if math.isfinite(value) and value == int(value) else value


def _resource_json(res: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"hostname": res.get("hostname", "")}
    for key in ("hwthreads", "accelerators"):
        if res.get(key):
            out[key] = res[key]
    if res.get("configuration"):
        out["configuration"] = res["configuration"]
    return out


@dataclass(frozen=True, slots=True)
class Event:
    """The outcome of one start or stop (REST or NATS), for assertions."""

    time: float
    kind: Literal["start", "stop"]
    source: str
    cluster: str | None
    job_id: int | None
    start_time: int | None
    status: int
    message: str
    db_id: int | None = None


@dataclass(frozen=True, slots=True)
class Offender:
    """One job that broke the exactly-once expectation, and why."""

    cluster: str
    job_id: int
    problem: str


@dataclass(frozen=True, slots=True)
class Report:
    """Result of ``Backend.check_exactly_once``."""

    expected: int
    started_once: int
    stopped_once: int
    with_resources: int
    still_running: int
    offenders: list[Offender]

    @property
    def ok(self) -> bool:
        """True when no job broke the expectation."""
        return not self.offenders

    def summary(self) -> str:
        """One line for logs and assertion messages."""
        head = (
            f"{self.expected} expected, {self.started_once} started once, "
            f"{self.stopped_once} stopped once, {self.with_resources} with resources, "
            f"{self.still_running} still running, {len(self.offenders)} offenders"
        )
        shown = "; ".join(f"{o.cluster}/{o.job_id}: {o.problem}" for o in self.offenders[:10])
        return head + (f": {shown}" if shown else "")


class _Rejected(Exception):
    def __init__(self, reply: Reply) -> None:
        self.reply = reply


class Backend:
    """cc-backend v1.5.4's job and node-state logic, without HTTP.

    Args:
        clusters: the loaded cluster configs (``clusters.load`` / ``clusters.minimal``).
        clock: wall-clock epoch seconds ("now" for durations, the commit worker).
        commit_interval: seconds between commit-worker runs; 0 = every start is committed at once.
            Production's default is 120 (``cron.commit-job-worker`` = 2m).
        legacy_v14: ≤v1.4 behaviour: a stop of an unknown job is 422, and the 8-state list.
        nats_mode: ``main.api-subjects`` is set: the HTTP layer hides REST start/stop (404).
        clusters_api: False = ``GET /api/clusters/`` answers 404 (a cc-backend without it).

    Stricter than cc-backend on one point: a start whose hwthread or accelerator ids are not in
    its subcluster's topology is refused with 400 (cc-backend accepts it and its metric
    selection then silently finds nothing for those ids; see ``SubCluster.unknown_ids``).
    """

    def __init__(
        self,
        clusters: Mapping[str, ClusterConfig],
        *,
        clock: Callable[[], float] = time.time,
        commit_interval: float = 0.0,
        legacy_v14: bool = False,
        nats_mode: bool = False,
        clusters_api: bool = True,
    ) -> None:
        self.clusters = dict(clusters)
        self.clusters_api = clusters_api
        self.clock = clock
        self.commit_interval = commit_interval
        self.legacy_v14 = legacy_v14
        self.nats_mode = nats_mode
        self.node_states: dict[str, dict[str, Any]] = {}
        self.events: list[Event] = []
        self._lock = threading.RLock()
        self._cache: dict[int, StoredJob] = {}
        self._committed: dict[int, StoredJob] = {}
        self._cache_ids = 0
        self._job_ids = 0
        self._tag_ids = 0
        self._by_job_id: dict[int, list[StoredJob]] = {}  # both tables, for lookups
        self._sorted: list[StoredJob] | None = None  # committed, startTime desc
        self._next_commit = clock() + commit_interval if commit_interval > 0 else math.inf

    # ----------------------------------------------------------------- inspection

    @property
    def jobs(self) -> list[StoredJob]:
        """Every job, uncommitted cache rows first, each table in id order."""
        with self._lock:
            self._maybe_commit()
            return [*self._cache.values(), *self._committed.values()]

    def find(self, cluster: str, job_id: int) -> list[StoredJob]:
        """All rows (both tables) for ``cluster``/``job_id``, oldest id first within each table."""
        with self._lock:
            self._maybe_commit()
            return [j for j in self._by_job_id.get(job_id, []) if j.cluster == cluster]

    # ----------------------------------------------------------------- start_job

    def start_job(self, raw: bytes, *, source: str = "rest") -> Reply:
        """§2: decode strictly, SanityChecks, duplicate rule, insert; 201 ``{"msg":"success"}``."""
        with self._lock:
            self._maybe_commit()
            req: dict[str, Any] = {}
            try:
                req = _decode_body(raw, "Job", JOB_FIELDS)
                job = self._insert(req)
            except _Rejected as rej:
                self._event("start", source, req, rej.reply)
                return rej.reply
            reply = Reply(201, b'{"msg":"success"}\n')
            self._event("start", source, req, reply, job.db_id)
            return reply

    def _insert(self, req: dict[str, Any]) -> StoredJob:
        cluster_name: str = req.get("cluster", "")
        resources: list[dict[str, Any] | None] = req.get("resources") or []
        # §2.2 step 3: SanityChecks, first failure wins.
        cluster = self.clusters.get(cluster_name)
        if cluster is None:
            raise _Rejected(error_reply(400, f"no such cluster: {cluster_name}"))
        sub_name: str = req.get("subCluster", "")
        if sub_name:
            if cluster.sub_cluster(sub_name) is None:
                raise _Rejected(
                    error_reply(
                        400,
                        f"ARCHIVE/CLUSTERCONFIG > already assigned subcluster {sub_name} "
                        f"unkown (cluster: {cluster_name})",
                    )
                )
        else:
            if not resources:
                msg = "ARCHIVE/CLUSTERCONFIG > job without any resources/hosts"
                raise _Rejected(error_reply(400, msg))
            host = (resources[0] or {}).get("hostname", "")
            sub = cluster.assign(host)
            if sub is None:
                raise _Rejected(
                    error_reply(
                        400,
                        f"ARCHIVE/CLUSTERCONFIG > no subcluster found for cluster "
                        f"{cluster_name} and host {host}",
                    )
                )
            sub_name = sub.name
        user: str = req.get("user", "")
        if not resources or not user:
            raise _Rejected(error_reply(400, "'resources' and 'user' should not be empty"))
        num_nodes: int = req.get("numNodes", 0)
        num_acc: int = req.get("numAcc", 0)
        num_hw: int = req.get("numHwthreads", 0)
        if num_acc < 0 or num_hw < 0 or num_nodes < 1:
            raise _Rejected(error_reply(400, "'numNodes', 'numAcc' or 'numHWThreads' invalid"))
        if len(resources) != num_nodes:
            raise _Rejected(
                error_reply(
                    400,
                    f"len(resources) does not equal numNodes ({len(resources)} vs {num_nodes})",
                )
            )
        topology = cluster.sub_cluster(sub_name)
        for r in resources:
            unknown = topology.unknown_ids(r or {}) if topology is not None else None
            if unknown is not None:
                host = (r or {}).get("hostname", "")
                raise _Rejected(
                    error_reply(
                        400,
                        f"ARCHIVE/CLUSTERCONFIG > {unknown} of host {host} is not in the "
                        f"topology of subcluster {sub_name} (cluster: {cluster_name})",
                    )
                )
        job_id: int = req.get("jobId", 0)
        start: int = req.get("startTime", 0)
        # Step 5: duplicate check against the committed `job` table only, signed difference.
        for row in self._by_job_id.get(job_id, []):
            if row.committed and row.cluster == cluster_name and start - row.start_time < 86400:
                raise _Rejected(
                    error_reply(
                        422,
                        "a job with that jobId, cluster and startTime already exists: "
                        f"dbid: {row.db_id}, jobid: {job_id}",
                    )
                )
        # Step 6: insert; the DB constraints give 500.
        tags: list[dict[str, Any]] = [t for t in req.get("tags") or [] if t is not None]
        to_cache = not tags and self.commit_interval > 0 and not self.legacy_v14
        table = "job_cache" if to_cache else "job"
        shared: str = req.get("shared", "none")
        smt: int = req.get("smt", 0)
        monitoring: int = req.get("monitoringStatus", 1)
        failed = ""
        if shared not in _SHARED:
            failed = "CHECK constraint failed: shared IN ('none', 'single_user', 'multi_user')"
        elif not tags and smt not in (0, 1):  # only job_cache has this CHECK
            failed = "CHECK constraint failed: smt IN (0, 1)"
        elif monitoring not in (0, 1, 2, 3):
            failed = "CHECK constraint failed: monitoring_status IN (0, 1, 2, 3)"
        if not failed:
            for row in self._by_job_id.get(job_id, []):
                if row.committed == (table == "job") and row.key == (job_id, cluster_name, start):
                    failed = (
                        f"UNIQUE constraint failed: {table}.job_id, {table}.cluster, "
                        f"{table}.start_time"
                    )
                    break
        if failed:
            raise _Rejected(error_reply(500, f"insert into database failed: {failed}"))
        for tag in tags:
            self._tag_ids += 1
            tag["id"] = self._tag_ids
        job = StoredJob(
            db_id=0,
            committed=not to_cache,
            job_id=job_id,
            cluster=cluster_name,
            sub_cluster=sub_name,
            start_time=start,
            user=user,
            project=req.get("project", ""),
            partition=req.get("partition", ""),
            shared=shared,
            state="running",  # step 2: forced
            duration=req.get("duration", 0),
            walltime=req.get("walltime", 0),
            num_nodes=num_nodes,
            num_hwthreads=num_hw,
            num_acc=num_acc,
            smt=smt,
            monitoring_status=monitoring,
            array_job_id=req.get("arrayJobId", 0),
            resources=[r or {"hostname": ""} for r in resources],
            meta_data=req.get("metaData"),
            tags=[
                {"type": t.get("type", ""), "name": t.get("name", ""), "scope": t.get("scope", "")}
                | {"id": t["id"]}
                for t in tags
            ],
            energy=req.get("energy", 0.0),
            energy_footprint=req.get("energyFootprint"),
            footprint=req.get("footprint"),
            statistics=None,
        )
        self._store(job)
        return job

    def _store(self, job: StoredJob) -> None:
        if job.committed:
            self._job_ids += 1
            job.db_id = self._job_ids
            self._committed[job.db_id] = job
            self._sorted = None
        else:
            self._cache_ids += 1
            job.db_id = self._cache_ids
            self._cache[job.db_id] = job
        self._by_job_id.setdefault(job.job_id, []).append(job)

    def _unstore(self, job: StoredJob) -> None:
        if job.committed:
            self._committed.pop(job.db_id, None)
            self._sorted = None
        else:
            self._cache.pop(job.db_id, None)
        rows = self._by_job_id.get(job.job_id, [])
        if job in rows:
            rows.remove(job)
        if not rows:
            self._by_job_id.pop(job.job_id, None)

    # ----------------------------------------------------------------- commit worker

    def _maybe_commit(self) -> None:
        now = self.clock()
        if now >= self._next_commit:
            self._commit()
            steps = math.floor((now - self._next_commit) / self.commit_interval) + 1
            self._next_commit += steps * self.commit_interval

    def _commit(self) -> int:
        """§6 SyncJobs: ``INSERT OR IGNORE INTO job SELECT ... FROM job_cache``, then empty it."""
        moved = 0
        for job in list(self._cache.values()):
            self._unstore(job)
            clash = any(
                r.committed and r.key == job.key for r in self._by_job_id.get(job.job_id, [])
            )
            if clash:
                continue  # OR IGNORE
            job.committed = True
            self._store(job)
            moved += 1
        return moved

    def commit_now(self) -> int:
        """Run the commit worker now; returns how many cache rows moved into ``job``."""
        with self._lock:
            return self._commit()

    # ----------------------------------------------------------------- stop_job

    def stop_job(self, raw: bytes, *, source: str = "rest") -> Reply:
        """§3: strict decode, cache-first lookup, 404/422/400 rules; 200 with the job JSON."""
        with self._lock:
            self._maybe_commit()
            req: dict[str, Any] = {}
            try:
                req = _decode_body(raw, "StopJobAPIRequest", STOP_FIELDS)
                job = self._stop(req)
            except _Rejected as rej:
                self._event("stop", source, req, rej.reply)
                return rej.reply
            body = go_json(job.to_json(self.clock(), with_metadata=False)) + "\n"
            reply = Reply(200, body.encode())
            self._event("stop", source, req, reply, job.db_id, start_time=job.start_time)
            return reply

    def _stop(self, req: dict[str, Any]) -> StoredJob:
        if "jobId" not in req:
            raise _Rejected(error_reply(400, "the field 'jobId' is required"))
        job_id: int = req["jobId"]
        cluster: str = req.get("cluster", "")
        start: int | None = req.get("startTime")
        rows = [
            r
            for r in self._by_job_id.get(job_id, [])
            if (not cluster or r.cluster == cluster) and (start is None or r.start_time == start)
        ]
        cached = [r for r in rows if not r.committed]
        committed = [r for r in rows if r.committed]
        # v1.5: job_cache first, then job; newest by DB id wins (commit 82e79b07).
        pool = committed if self.legacy_v14 else (cached or committed)
        if not pool:
            status = 422 if self.legacy_v14 else 404
            raise _Rejected(error_reply(status, "finding job failed: sql: no rows in result set"))
        job = max(pool, key=lambda r: r.db_id)
        prefix = f"jobId {job.job_id} (id {job.db_id}) on {job.cluster}"
        if job.state != "running":
            raise _Rejected(
                error_reply(422, f"{prefix} : job has already been stopped (state is: {job.state})")
            )
        stop: int = req.get("stopTime", 0)
        if job.start_time > stop:
            raise _Rejected(
                error_reply(
                    400,
                    f"{prefix} : stopTime {stop} must be larger/equal than startTime "
                    f"{job.start_time}",
                )
            )
        state: str = req.get("jobState", "")
        valid = VALID_STATES_V14 if self.legacy_v14 else VALID_STATES_V15
        if state and state not in valid:
            raise _Rejected(error_reply(400, f'{prefix} : invalid requested job state: "{state}"'))
        if not job.committed:  # TransferCachedJobToMain: a new id in `job`
            if any(r.committed and r.key == job.key for r in rows):
                raise _Rejected(
                    error_reply(
                        500,
                        "UNIQUE constraint failed: job.job_id, job.cluster, job.start_time",
                    )
                )
            self._unstore(job)
            job.committed = True
            self._store(job)
        job.duration = stop - job.start_time
        job.state = state or "completed"
        return job

    # ----------------------------------------------------------------- GET /api/jobs/

    def get_jobs(self, query: list[tuple[str, str]]) -> Reply:
        """§4: query validation, filters over committed jobs, startTime desc, paging."""
        with self._lock:
            self._maybe_commit()
            states: list[str] = []
            cluster = project = None
            time_range: tuple[int, int] | None = None
            page, ipp, with_meta = 1, 25, False
            seen: dict[str, str] = {}
            for key, value in query:
                if key not in _QUERY_KEYS:
                    return error_reply(400, f"invalid query parameter: {key}")
                if key == "state":
                    if value not in VALID_STATES_V15:
                        return error_reply(400, "invalid query parameter value: state")
                    states.append(value)
                elif key not in seen:  # Go uses the first value of the other keys
                    seen[key] = value
            try:
                for key, value in seen.items():
                    if key == "cluster":
                        cluster = value
                    elif key == "project":
                        project = value
                    elif key == "with-metadata":
                        with_meta = True  # presence, not value (§4.1)
                    elif key == "start-time":
                        parts = value.split("-")
                        if len(parts) != 2:
                            return error_reply(400, "invalid query parameter value: startTime")
                        time_range = (_parse_int(parts[0]), _parse_int(parts[1]))
                    elif key == "page":
                        page = _atoi(value)
                        if page < 1:
                            return error_reply(400, "page must be >= 1")
                    elif key == "items-per-page":
                        ipp = _atoi(value)
                        if ipp < 1:
                            return error_reply(400, "items-per-page must be >= 1")
            except ValueError as exc:
                return error_reply(400, str(exc))
            if self._sorted is None:
                self._sorted = sorted(
                    self._committed.values(), key=lambda j: (-j.start_time, -j.db_id)
                )
            wanted = frozenset(states)
            offset = (page - 1) * ipp
            chosen: list[StoredJob] = []
            skipped = 0
            for job in self._sorted:
                if wanted and job.state not in wanted:
                    continue
                if cluster is not None and job.cluster != cluster:
                    continue
                if project is not None and job.project != project:
                    continue
                if time_range and not time_range[0] <= job.start_time <= time_range[1]:
                    continue
                if skipped < offset:
                    skipped += 1
                    continue
                chosen.append(job)
                if len(chosen) >= ipp:
                    break
            now = self.clock()
            body = {
                "jobs": [j.to_json(now, with_metadata=with_meta) for j in chosen],
                "items": ipp,
                "page": page,
            }
            return Reply(200, (go_json(body) + "\n").encode())

    # ----------------------------------------------------------------- nodestate

    def list_clusters(self, query: list[tuple[str, str]]) -> Reply:
        """``GET /api/clusters/[?cluster=X]``: ``{"clusters": [cluster config, ...]}``.

        Loaded configs are returned as read; generated ones as name + sub-cluster node lists.
        """
        if not self.clusters_api:
            return map_reply(404, _NOT_FOUND)
        wanted = [v for k, v in query if k == "cluster"]
        for name in wanted:
            if name not in self.clusters:  # internal/api/cluster.go getClusters
                return error_reply(400, f"unknown cluster: {name}")
        out: list[Mapping[str, object]] = []
        for name, cfg in sorted(self.clusters.items()):
            if wanted and name not in wanted:
                continue
            out.append(
                cfg.raw
                or {
                    "name": name,
                    "subClusters": [{"name": s.name, "nodes": s.nodes} for s in cfg.sub_clusters],
                }
            )
        return Reply(200, (go_json({"clusters": out}) + "\n").encode())

    def node_state(self, raw: bytes) -> Reply:
        """§5: strict decode, remember the last payload per cluster, 200 with an empty body."""
        with self._lock:
            try:
                req = decode(raw, "UpdateNodeStatesRequest", NODESTATE_FIELDS)
            except DecodeError as exc:
                return error_reply(400, f"parsing request body failed: {exc}")
            cluster = req.get("cluster", "")
            nodes = [n or {} for n in req.get("nodes") or []]
            for node in nodes:
                node["state"] = collapse_states(node.get("states") or [])
            self.node_states[cluster] = {"cluster": cluster, "nodes": nodes}
            return Reply(200, b"", "")

    # ----------------------------------------------------------------- admin hooks

    def restart(self, drop_uncommitted: bool) -> int:
        """cc-backend restarts; with ``drop_uncommitted`` the ``job_cache`` rows are lost.

        Returns the number of dropped rows (0 when kept).
        """
        with self._lock:
            if not drop_uncommitted:
                return 0
            dropped = list(self._cache.values())
            for job in dropped:
                self._unstore(job)
            return len(dropped)

    def delete_job(self, cluster: str, job_id: int) -> int:
        """Delete every row of ``cluster``/``job_id`` from both tables (admin or retention)."""
        with self._lock:
            rows = [r for r in self._by_job_id.get(job_id, []) if r.cluster == cluster]
            for row in rows:
                self._unstore(row)
            return len(rows)

    def sweep_undead(self, grace: int = 0) -> int:
        """§6 undead-job cron: running ``job`` rows past walltime + grace become failed."""
        with self._lock:
            self._maybe_commit()
            now = self.clock()
            swept = 0
            for job in self._committed.values():
                overdue = job.start_time < now - job.walltime - grace
                if job.state == "running" and job.walltime > 0 and overdue:
                    job.state, job.duration, job.monitoring_status = "failed", 0, 2
                    swept += 1
            return swept

    # ----------------------------------------------------------------- assertions

    def _event(
        self,
        kind: Literal["start", "stop"],
        source: str,
        req: Mapping[str, Any],
        reply: Reply,
        db_id: int | None = None,
        *,
        start_time: int | None = None,
    ) -> None:
        message = reply.error or ("success" if kind == "start" else "stopped")
        self.events.append(
            Event(
                time=self.clock(),
                kind=kind,
                source=source,
                cluster=req.get("cluster"),
                job_id=req.get("jobId"),
                start_time=req.get("startTime", start_time),
                status=reply.status,
                message=message,
                db_id=db_id,
            )
        )

    def check_exactly_once(
        self,
        expected: Iterable[tuple[str, int]],
        *,
        hwthreads: bool | Iterable[tuple[str, int]] = False,
        allow_unexpected: bool = False,
    ) -> Report:
        """Every expected job started exactly once and stopped exactly once, with resources.

        Args:
            expected: (cluster, jobId) pairs that must each have exactly one 201 start and one
                200 stop, exactly one stored row, resources with hostnames, and not be running.
            hwthreads: True (all) or the pairs whose every resource must carry ``hwthreads``.
            allow_unexpected: do not report stored jobs that are not in ``expected``.
        """
        with self._lock:
            self._maybe_commit()
            want = list(dict.fromkeys(expected))
            want_set = set(want)
            need_hw = want_set if hwthreads is True else set(hwthreads or ())
            starts = Counter(
                (e.cluster, e.job_id) for e in self.events if e.kind == "start" and e.status == 201
            )
            stops = Counter(
                (e.cluster, e.job_id) for e in self.events if e.kind == "stop" and e.status == 200
            )
            rows: dict[tuple[str, int], list[StoredJob]] = {}
            for job in [*self._cache.values(), *self._committed.values()]:
                rows.setdefault((job.cluster, job.job_id), []).append(job)
            offenders: list[Offender] = []
            started = stopped = with_res = running = 0
            for cluster, job_id in want:
                key = (cluster, job_id)
                problems: list[str] = []
                if starts[key] == 1:
                    started += 1
                else:
                    problems.append(f"started {starts[key]} times")
                if stops[key] == 1:
                    stopped += 1
                else:
                    problems.append(f"stopped {stops[key]} times")
                found = rows.get(key, [])
                if len(found) != 1:
                    problems.append(f"{len(found)} stored rows")
                if any(j.state == "running" for j in found):
                    running += 1
                    problems.append("still running")
                res_ok = bool(found) and all(
                    j.resources and all(r.get("hostname") for r in j.resources) for j in found
                )
                if res_ok and key in need_hw:
                    res_ok = all(r.get("hwthreads") for j in found for r in j.resources)
                    if not res_ok:
                        problems.append("resources without hwthreads")
                elif not res_ok:
                    problems.append("no resources")
                if res_ok:
                    with_res += 1
                offenders.extend(Offender(cluster, job_id, p) for p in problems)
            if not allow_unexpected:
                for (cluster, job_id), found in rows.items():
                    if (cluster, job_id) not in want_set:
                        offenders.append(Offender(cluster, job_id, "not expected but stored"))
                        running += sum(j.state == "running" for j in found)
            return Report(len(want), started, stopped, with_res, running, offenders)


def _decode_body(raw: bytes, root: str, fields: Mapping[str, Spec]) -> dict[str, Any]:
    try:
        return decode(raw, root, fields)
    except DecodeError as exc:
        raise _Rejected(error_reply(400, f"parsing request body failed: {exc}")) from None


def collapse_states(states: Iterable[str]) -> str:
    """§5: allocated > reserved > (idle+down = down) > idle > down > mixed, else unknown."""
    have = {s.lower() for s in states}
    for name in ("allocated", "reserved"):
        if name in have:
            return name
    if "idle" in have:
        return "down" if "down" in have else "idle"
    for name in ("down", "mixed"):
        if name in have:
            return name
    return "unknown"


def _atoi(text: str) -> int:
    """Go's ``strconv.Atoi`` with its error text."""
    try:
        return _go_int(text)
    except ValueError:
        raise ValueError(f'strconv.Atoi: parsing "{text}": invalid syntax') from None


def _parse_int(text: str) -> int:
    try:
        return _go_int(text)
    except ValueError:
        raise ValueError(f'strconv.ParseInt: parsing "{text}": invalid syntax') from None


def _go_int(text: str) -> int:
    body = text[1:] if text[:1] in "+-" else text
    if not body or not body.isascii() or not body.isdigit():
        raise ValueError(text)
    return int(text)
