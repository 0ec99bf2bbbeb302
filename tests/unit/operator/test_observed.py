"""What the workloads report, read into status: the pure aggregation (worker versions → WorkersInSync,
writer lag → partitionLag/lagRecords/lagUnknown) and the policy and shard reconcilers with pods and
answers faked."""

import dataclasses
from typing import Any

from payplane_operator.api.conditions import ConditionType, Reason
from payplane_operator.reconcile.observed import (
    PodAddress,
    PodReport,
    WorkerVersion,
    lag_fields,
    started_pods,
    workers_condition,
    workers_fields,
)
from payplane_operator.reconcile.policy import policy_view, reconcile_policy
from payplane_operator.reconcile.shard import reconcile_shard
from payplane_operator.reconcile.workloads import ChildTracker
from tests.operator_support import FakeWorkloadStatus, body, fake_deps, policy_spec, rail_spec, shard_spec


def _pod(name: str, ip: str | None, *, phase: str = "Running", deleting: bool = False, **labels: str) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": "payments", "labels": labels}
    if deleting:
        meta["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    status: dict[str, Any] = {"phase": phase}
    if ip:
        status["podIP"] = ip
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "status": status}


def test_only_running_pods_with_an_address_count() -> None:
    pods = [
        _pod("b", "198.18.0.2"),
        _pod("a", "198.18.0.1"),
        _pod("pending", None, phase="Pending"),
        _pod("going", "198.18.0.3", deleting=True),
        _pod("done", "198.18.0.4", phase="Succeeded"),
    ]
    assert started_pods(pods) == [PodAddress("a", "198.18.0.1"), PodAddress("b", "198.18.0.2")]


def _worker(pod: str, version: str | None, reachable: bool = True) -> WorkerVersion:
    return WorkerVersion("card-eur", pod, version, reachable)


def test_workers_in_sync_when_every_worker_runs_the_active_version() -> None:
    workers = [_worker("w1", "v2"), _worker("w2", "v2")]
    condition = workers_condition("v2", workers)
    assert (condition.status, condition.reason) == (True, Reason.WORKERS_IN_SYNC)
    assert workers_fields("v2", workers) == {
        "workers": [
            {"rail": "card-eur", "pod": "w1", "reachable": True, "version": "v2"},
            {"rail": "card-eur", "pod": "w2", "reachable": True, "version": "v2"},
        ],
        "workersInSync": "2/2",
    }


def test_a_worker_on_another_version_is_named_and_not_a_failure() -> None:
    condition = workers_condition("v2", [_worker("w1", "v2"), _worker("w2", "v1"), _worker("w3", "")])
    assert (condition.status, condition.reason) == (False, Reason.WORKERS_OUT_OF_SYNC)
    assert condition.message == "1/3 run v2; w2 runs v1, w3 runs no policy"
    assert not condition.failed  # a rollout in progress: waiting, not degraded


def test_an_unreachable_worker_is_unknown() -> None:
    workers = [_worker("w1", "v2"), _worker("w2", None, reachable=False)]
    condition = workers_condition("v2", workers)
    assert (condition.status, condition.reason) == (None, Reason.WORKERS_UNREACHABLE)
    assert "no answer from w2" in condition.message
    assert workers_fields("v2", workers)["workers"][1] == {"rail": "card-eur", "pod": "w2", "reachable": False}
    assert workers_fields("v2", workers)["workersInSync"] == "1/2"


def test_no_workers_and_no_valid_version() -> None:
    assert workers_condition("v1", []).reason is Reason.NO_WORKERS
    assert workers_condition("v1", []).status is True
    assert workers_condition(None, [_worker("w1", "")]).reason is Reason.NOT_DELIVERED


def _report(name: str, status: dict[str, Any] | None) -> PodReport:
    return PodReport(PodAddress(name, "198.18.0.9"), status)


def test_lag_per_partition_a_total_and_the_partitions_nobody_reported() -> None:
    reports = [
        _report("writer-a", {"lagRecords": {"0": 5, "1": 0}}),
        _report("writer-b", {"lagRecords": {"2": 7, "9": 100, "x": 3, "3": "many"}}),  # 9: not ours; bad entries
        _report("writer-c", None),
    ]
    assert lag_fields(0, 5, reports) == {
        "partitionLag": [
            {"partition": 0, "records": 5, "writer": "writer-a"},
            {"partition": 1, "records": 0, "writer": "writer-a"},
            {"partition": 2, "records": 7, "writer": "writer-b"},
        ],
        "lagRecords": 12,
        "lagUnknown": "3-5",
    }
    assert lag_fields(4, 7, []) == {"partitionLag": [], "lagUnknown": "4-7"}
    caught_up = lag_fields(0, 1, [_report("writer-a", {"lagRecords": {"0": 0, "1": 0}})])
    assert caught_up["lagRecords"] == 0
    assert "lagUnknown" not in caught_up


def test_two_writers_reporting_one_partition_show_the_larger_lag() -> None:
    reports = [_report("old", {"lagRecords": {"0": 40}}), _report("new", {"lagRecords": {"0": 3}})]
    assert lag_fields(0, 0, reports)["partitionLag"] == [{"partition": 0, "records": 40, "writer": "old"}]


WORKER_LABELS = {
    "app.kubernetes.io/name": "payplane",
    "app.kubernetes.io/instance": "card-eur",
    "app.kubernetes.io/component": "payment-worker",
}


async def test_the_policy_status_says_which_version_each_worker_runs() -> None:
    deps, kube, _, _ = fake_deps()
    answers = FakeWorkloadStatus()
    deps = dataclasses.replace(deps, workload_status=answers)
    policy = body("FraudPolicy", "default", policy_spec())
    kube.put(policy)
    version = policy_view(policy).version
    kube.put(_pod("card-eur-payment-worker-1", "198.18.0.1", **WORKER_LABELS))
    kube.put(_pod("card-eur-payment-worker-2", "198.18.0.2", **WORKER_LABELS))
    kube.put(_pod("other-rail-worker", "198.18.0.3", **{**WORKER_LABELS, "app.kubernetes.io/instance": "other"}))
    answers.answers["198.18.0.1"] = {"fraudPolicyVersion": version}
    answers.answers["198.18.0.2"] = {"fraudPolicyVersion": "0123456789abcdef"}
    outcome = await reconcile_policy(policy, deps, ["card-eur"])
    conditions = {c["type"]: c for c in outcome.status["conditions"]}
    assert conditions[ConditionType.WORKERS_IN_SYNC]["reason"] == "WorkersOutOfSync"
    assert outcome.status["workersInSync"] == "1/2"
    assert outcome.status["phase"] == "Provisioning"
    assert not outcome.retry  # the rollout follow-up and the drift timer ask again, not a retry loop
    assert sorted(ip for ip, _ in answers.reads) == ["198.18.0.1", "198.18.0.2"]
    assert {port for _, port in answers.reads} == {9090}

    answers.answers["198.18.0.2"] = {"fraudPolicyVersion": version}
    outcome = await reconcile_policy(await kube.get_body(policy), deps, ["card-eur"])
    assert outcome.status["phase"] == "Ready"
    assert outcome.status["version"] == version
    assert outcome.status["rails"] == ["card-eur"]

    # an invalid change keeps the active version; the workers still run it
    broken = await kube.get_body(policy)
    broken["spec"] = policy_spec(lists=[])
    broken["metadata"]["generation"] = 2
    kube.put(broken)
    outcome = await reconcile_policy(broken, deps, ["card-eur"])
    assert outcome.status["version"] == version
    conditions = {c["type"]: c for c in outcome.status["conditions"]}
    assert conditions["PolicyValid"]["status"] == "False"
    assert conditions["WorkersInSync"]["status"] == "True"
    assert outcome.status["phase"] == "Invalid"


async def test_the_shard_status_carries_its_writers_lag() -> None:
    deps, kube, _, _ = fake_deps()
    answers = FakeWorkloadStatus()
    deps = dataclasses.replace(deps, workload_status=answers)
    rail = body("PaymentRail", "card-eur", rail_spec())
    kube.put(rail)
    shard = body("LedgerShard", "card-eur-a", shard_spec(first=0, last=3))
    kube.put(shard)
    labels = {
        **WORKER_LABELS,
        "app.kubernetes.io/instance": "card-eur-a",
        "app.kubernetes.io/component": "ledger-writer",
    }
    kube.put(_pod("card-eur-a-ledger-writer-1", "198.18.0.7", **labels))
    answers.answers["198.18.0.7"] = {"lagRecords": {"0": 10, "1": 0, "2": 2, "3": 0}}
    outcome = await reconcile_shard(shard, rail, deps, ChildTracker())
    assert outcome.status["lagRecords"] == 12
    assert len(outcome.status["partitionLag"]) == 4
    assert "lagUnknown" not in outcome.status
    answers.answers.clear()  # the writer stops answering: unknown, not an error
    outcome = await reconcile_shard(await kube.get_body(shard), rail, deps, ChildTracker())
    assert outcome.status["lagUnknown"] == "0-3"
    assert "lagRecords" not in outcome.status
    assert outcome.ready
