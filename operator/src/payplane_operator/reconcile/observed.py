"""What the workloads report about themselves (``GET /status`` on each pod's metrics port), read into the
custom resources' status: the FraudPolicy version every payment worker runs, and a shard's lag per
partition from its writers.

The functions at the top are pure (pods and reports in, status fields and conditions out); ``observe``
lists the pods and asks each one, every read bounded (``clients.workload_status``). A pod that has not
started (no IP yet) is not a worker yet; one that does not answer is reported as unknown, never as a
failure: the next drift pass asks again.
"""

import asyncio
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from payplane_operator.api.conditions import Condition, ConditionType, Reason, ok
from payplane_operator.clients.errors import ClientError
from payplane_operator.desired.coverage import span
from payplane_operator.desired.workloads import METRICS_PORT
from payplane_operator.limits import WORKLOAD_PODS_MAX
from payplane_operator.reconcile.ports import Deps

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PodAddress:
    name: str
    ip: str


@dataclass(frozen=True)
class PodReport:
    """One started pod and what it answered (None: no answer)."""

    pod: PodAddress
    status: Mapping[str, Any] | None


def started_pods(pods: Iterable[Mapping[str, Any]]) -> list[PodAddress]:
    """Pods that run (phase Running, an IP) and are not being deleted, by name."""
    started = []
    for pod in pods:
        meta, status = pod.get("metadata") or {}, pod.get("status") or {}
        if meta.get("deletionTimestamp") or status.get("phase") != "Running" or not status.get("podIP"):
            continue
        started.append(PodAddress(str(meta.get("name", "")), str(status["podIP"])))
    return sorted(started, key=lambda p: p.name)


# --- FraudPolicy: the version each worker runs -------------------------------------------------------


@dataclass(frozen=True)
class WorkerVersion:
    rail: str
    pod: str
    version: str | None  # None: the pod did not answer (unknown)
    reachable: bool


def worker_version(rail: str, report: PodReport) -> WorkerVersion:
    if report.status is None:
        return WorkerVersion(rail, report.pod.name, None, reachable=False)
    version = report.status.get("fraudPolicyVersion")
    return WorkerVersion(rail, report.pod.name, version if isinstance(version, str) else "", reachable=True)


def workers_condition(active: str | None, workers: Sequence[WorkerVersion]) -> Condition:
    """Whether every started payment worker of the rails using the policy runs ``active``."""
    kind = ConditionType.WORKERS_IN_SYNC
    if active is None:
        return Condition(kind, False, Reason.NOT_DELIVERED, "the policy has no valid version to deliver")
    if not workers:
        return ok(kind, Reason.NO_WORKERS, "no payment worker of a rail that uses this policy is running")
    behind = [w for w in workers if w.reachable and w.version != active]
    unknown = [w for w in workers if not w.reachable]
    in_sync = len(workers) - len(behind) - len(unknown)
    if behind:
        named = ", ".join(f"{w.pod} runs {w.version or 'no policy'}" for w in behind[:10])
        return Condition(kind, False, Reason.WORKERS_OUT_OF_SYNC, f"{in_sync}/{len(workers)} run {active}; {named}")
    if unknown:
        named = ", ".join(w.pod for w in unknown[:10])
        return Condition(
            kind, None, Reason.WORKERS_UNREACHABLE, f"{in_sync}/{len(workers)} run {active}; no answer from {named}"
        )
    return ok(kind, Reason.WORKERS_IN_SYNC, f"all {len(workers)} payment workers run version {active}")


def workers_fields(active: str | None, workers: Sequence[WorkerVersion]) -> dict[str, Any]:
    """``workers`` (per pod: rail, pod, version; at most WORKLOAD_PODS_MAX listed) and ``workersInSync``."""
    listed = []
    for worker in sorted(workers, key=lambda w: (w.rail, w.pod))[:WORKLOAD_PODS_MAX]:
        entry: dict[str, Any] = {"rail": worker.rail, "pod": worker.pod, "reachable": worker.reachable}
        if worker.version is not None:
            entry["version"] = worker.version
        listed.append(entry)
    in_sync = sum(1 for w in workers if active is not None and w.version == active)
    return {"workers": listed, "workersInSync": f"{in_sync}/{len(workers)}"}


# --- LedgerShard: lag per partition ------------------------------------------------------------------


def writer_lag(report: PodReport) -> dict[int, int] | None:
    """The lag per partition a writer reports (None: no answer; malformed entries are left out)."""
    if report.status is None:
        return None
    raw = report.status.get("lagRecords")
    lag = {}
    for key, value in (raw if isinstance(raw, Mapping) else {}).items():
        if isinstance(key, str) and key.isdigit() and isinstance(value, int) and not isinstance(value, bool):
            lag[int(key)] = max(0, value)
    return lag


def _ranges(partitions: Sequence[int]) -> str:
    runs: list[tuple[int, int]] = []
    for p in sorted(partitions):
        if runs and runs[-1][1] == p - 1:
            runs[-1] = (runs[-1][0], p)
        else:
            runs.append((p, p))
    return ",".join(span(a, b) for a, b in runs)


def lag_fields(first: int, last: int, reports: Sequence[PodReport]) -> dict[str, Any]:
    """``partitionLag`` (per owned partition a writer reported: records behind and which writer),
    ``lagRecords`` (their total; absent when no partition's lag is known) and ``lagUnknown`` (the owned
    partitions no reachable writer reported, as ranges). Should two writers report a partition (a
    replaced one still draining), the larger lag is shown."""
    known: dict[int, tuple[int, str]] = {}
    for report in reports:
        for partition, records in (writer_lag(report) or {}).items():
            if first <= partition <= last and records >= known.get(partition, (-1, ""))[0]:
                known[partition] = (records, report.pod.name)
    fields: dict[str, Any] = {
        "partitionLag": [
            {"partition": p, "records": records, "writer": writer} for p, (records, writer) in sorted(known.items())
        ]
    }
    if known:
        fields["lagRecords"] = sum(records for records, _ in known.values())
    unknown = [p for p in range(first, last + 1) if p not in known]
    if unknown:
        fields["lagUnknown"] = _ranges(unknown)
    return fields


# --- I/O ---------------------------------------------------------------------------------------------


async def observe(deps: Deps, namespace: str, selector: Mapping[str, str]) -> list[PodReport] | None:
    """Every started pod matching ``selector`` and its ``/status`` answer, asked in parallel (each read
    bounded by the client). None when the pods cannot be listed."""
    label_selector = ",".join(f"{k}={v}" for k, v in sorted(selector.items()))
    try:
        pods = await deps.kube.list("v1", "Pod", namespace, label_selector)
    except ClientError as error:
        log.warning("could not list the pods %s in namespace %s: %s", label_selector, namespace, error)
        return None
    addresses = started_pods(pods)[:WORKLOAD_PODS_MAX]
    answers = await asyncio.gather(*(deps.workload_status.read(a.ip, METRICS_PORT) for a in addresses))
    return [PodReport(a, s) for a, s in zip(addresses, answers, strict=True)]
