"""The workloads' own status read into the custom resources, with everything real: the operator process,
the process kubelet running the rail's payment workers and ledger writers as local processes, the real
API server, Kafka and PostgreSQL (``payplane.devinfra.up.bring_up``, as ``make run``; drift timer 3 s).

- Every payment worker reports the FraudPolicy version it runs (``GET /status``, and the
  ``payplane_fraud_policy_info`` metric), and the policy's status lists each one and says WorkersInSync.
- A changed FraudPolicy reaches every worker within a bound, without a restart (same processes), and a
  payment that passed before is declined by the new rule while a smaller one still succeeds.
- A LedgerShard shows lag > 0 while its writers cannot commit (the test holds a lock on the shard
  databases' ``ledger_partitions`` table, which every batch's fencing check reads) and payments keep
  arriving, and 0 again once they caught up.
"""

import asyncio
import json
import time
import urllib.request
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import aiohttp
import asyncpg
import pytest

from payplane.devinfra.demo_load import DemoLoad
from payplane.devinfra.settings import InfraSettings
from payplane.devinfra.up import Platform, UpOptions
from tests.e2e.conftest import running_platform

POLICY = "card-default"  # the example's FraudPolicy (bring_up renames the rail, not the policy)
METRICS_PORT = 9090
DRIFT_S = 3.0
POLICY_SYNC_BOUND_S = 30.0  # a change → every worker reports it (kubelet 1 s + worker check 1 s + follow-ups)
LAG_BOUND_S = 45.0
POLL_S = 0.5
BACKLOG_PAYMENTS = 12
WORKERS = 2  # so that "every worker" means more than one
T = TypeVar("T")
pytestmark = pytest.mark.timeout(600)


@pytest.fixture(scope="module")
def platform(settings: InfraSettings) -> Iterator[Platform]:
    run_id = uuid.uuid4().hex[:6]
    options = UpOptions(
        namespace=f"e2e-st-{run_id}",
        rail_name=f"e2e-st-{run_id}",
        node_name=f"e2e-st-{run_id}",
        topics_deletion_policy="Delete",
        operator_drift_interval_s=DRIFT_S,
    )
    with running_platform(settings, options) as platform:
        scaling = {"replicas": WORKERS, "autoscaling": {"enabled": False}}
        patch = json.dumps({"spec": {"paymentWorker": {"scaling": scaling}}})
        platform.kubectl.run(
            "patch", "paymentrail", platform.rail, "-n", platform.namespace, "--type=merge", "-p", patch
        )
        _wait(f"{WORKERS} ready payment workers", lambda: len(_ready(platform, "payment-worker")) == WORKERS, 120)
        yield platform


def _wait(what: str, probe: Callable[[], T | None], timeout_s: float) -> T:
    deadline = time.monotonic() + timeout_s
    last: T | None = None
    while time.monotonic() < deadline:
        last = probe()
        if last:
            return last
        time.sleep(POLL_S)
    pytest.fail(f"timed out after {timeout_s:.0f} s waiting for {what} (last: {last!r})")


def _policy(platform: Platform) -> dict[str, Any]:
    return platform.kubectl.get_json("fraudpolicy", POLICY, "-n", platform.namespace)


def _condition(obj: dict[str, Any], condition_type: str) -> dict[str, Any]:
    found = [c for c in (obj.get("status") or {}).get("conditions", []) if c["type"] == condition_type]
    return found[0] if found else {}


def _running(platform: Platform, component: str) -> list[dict[str, Any]]:
    return [
        p
        for p in platform.pods()
        if p["metadata"]["labels"].get("app.kubernetes.io/component") == component
        and not p["metadata"].get("deletionTimestamp")
        and p["status"].get("phase") == "Running"
    ]


def _ready(platform: Platform, component: str) -> list[dict[str, Any]]:
    return [
        p
        for p in _running(platform, component)
        if any(c["type"] == "Ready" and c["status"] == "True" for c in p["status"].get("conditions") or [])
    ]


def _get(pod: dict[str, Any], path: str) -> bytes:
    with urllib.request.urlopen(f"http://{pod['status']['podIP']}:{METRICS_PORT}{path}", timeout=5) as response:
        body: bytes = response.read()
        return body


def _worker_versions(platform: Platform) -> dict[str, str | None]:
    return {
        p["metadata"]["name"]: json.loads(_get(p, "/status"))["fraudPolicyVersion"]
        for p in _running(platform, "payment-worker")
    }


def _in_sync(platform: Platform, version: str) -> dict[str, Any] | None:
    """The policy's status once it shows ``version`` on every running worker (and says so)."""
    policy = _policy(platform)
    status = policy.get("status") or {}
    workers = _running(platform, "payment-worker")
    listed = {w["pod"]: w.get("version") for w in status.get("workers", [])}
    if (
        status.get("version") == version
        and workers
        and listed == {p["metadata"]["name"]: version for p in workers}
        and status.get("workersInSync") == f"{len(workers)}/{len(workers)}"
        and _condition(policy, "WorkersInSync").get("status") == "True"
    ):
        return policy
    return None


def test_every_worker_reports_the_version_it_runs_and_the_policy_lists_them(platform: Platform) -> None:
    version = _wait("the policy's version", lambda: (_policy(platform).get("status") or {}).get("version"), 60)
    policy = _wait("every worker on the policy's version", lambda: _in_sync(platform, version), 60)
    assert policy["status"]["phase"] == "Ready"
    assert policy["status"]["rails"] == [platform.rail]
    workers = _running(platform, "payment-worker")
    assert len(workers) == WORKERS
    assert set(_worker_versions(platform).values()) == {version}
    for pod in workers:
        metrics = _get(pod, "/metrics").decode()
        assert f'payplane_fraud_policy_info{{mode="enforce",policy="{POLICY}",version="{version}"}} 1.0' in metrics


async def _pay(load: DemoLoad, http: aiohttp.ClientSession, amount_minor: int) -> dict[str, Any]:
    """One payment through the gateway, followed until the worker and ledger decided it."""
    status, payment = await load._post(http, "/v1/payments", load.payment_body(amount_minor), f"e2e-{uuid.uuid4()}")
    assert status == 200, payment
    deadline = time.monotonic() + 30
    while payment["status"] == "processing" and time.monotonic() < deadline:
        async with http.get(load._url(f"/v1/payments/{payment['id']}?wait_ms=2000"), headers=load._headers) as got:
            payment = await got.json()
    return payment


@asynccontextmanager
async def _client(platform: Platform) -> AsyncIterator[tuple[DemoLoad, aiohttp.ClientSession]]:
    load = DemoLoad(platform.gateway_urls, platform.api_key, platform.currency)
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http:
        await load.open_accounts(http)
        await load.first_payment(http)  # the ledger has opened the accounts
        yield load, http


def test_a_changed_policy_reaches_every_worker_and_decides_the_next_payments(platform: Platform) -> None:
    before = _policy(platform)["status"]["version"]
    workers = {
        p["metadata"]["name"]: p["status"]["containerStatuses"][0]["containerID"]
        for p in _running(platform, "payment-worker")
    }

    async def scenario() -> None:
        async with _client(platform) as (load, http):
            assert (await _pay(load, http, 2_000))["status"] == "succeeded"  # the example policy allows it
            rule = {"name": "over-1000", "action": "Decline", "when": {"amountAbove": {platform.currency: 1_000}}}
            rules = [rule, *_policy(platform)["spec"]["rules"]]
            patch = json.dumps({"spec": {"rules": rules}})
            platform.kubectl.run("patch", "fraudpolicy", POLICY, "-n", platform.namespace, "--type=merge", "-p", patch)
            changed_at = time.monotonic()
            new = _wait("a new version", lambda: _changed_version(platform, before), 15)
            await asyncio.to_thread(_wait, "every worker on the new version", lambda: _in_sync(platform, new),
                                    POLICY_SYNC_BOUND_S)  # fmt: skip
            print(f"policy change → every worker reports {new}: {time.monotonic() - changed_at:.1f} s")
            assert set(_worker_versions(platform).values()) == {new}
            for _ in range(4):  # the gateway spreads them over the workers
                declined = await _pay(load, http, 2_000)
                assert (declined["status"], declined.get("failure_code")) == ("failed", "fraud_declined"), declined
            assert (await _pay(load, http, 500))["status"] == "succeeded"

    asyncio.run(scenario())
    after = {
        p["metadata"]["name"]: p["status"]["containerStatuses"][0]["containerID"]
        for p in _running(platform, "payment-worker")
    }
    assert after == workers, "the same worker processes reloaded the policy: no restart, no new pod"


def _changed_version(platform: Platform, before: str) -> str | None:
    version = (_policy(platform).get("status") or {}).get("version")
    return version if version and version != before else None


def _shards(platform: Platform) -> list[dict[str, Any]]:
    shards: list[dict[str, Any]] = platform.kubectl.get_json("ledgershards", "-n", platform.namespace)["items"]
    return shards


def _all_caught_up(platform: Platform) -> list[dict[str, Any]] | None:
    shards = _shards(platform)
    statuses = [s.get("status") or {} for s in shards]
    done = all(s.get("lagRecords") == 0 and "lagUnknown" not in s for s in statuses)
    return shards if shards and done else None


def _lagging(platform: Platform) -> int | None:
    total = sum((s.get("status") or {}).get("lagRecords", 0) for s in _shards(platform))
    return total or None


def test_a_shard_shows_lag_under_a_backlog_and_none_once_caught_up(platform: Platform) -> None:
    shards = _wait("every shard caught up (lag 0 on every partition)", lambda: _all_caught_up(platform), LAG_BOUND_S)
    for shard in shards:
        status = shard["status"]
        owned = shard["spec"]["partitions"]
        assert [p["partition"] for p in status["partitionLag"]] == list(range(owned["first"], owned["last"] + 1))
        assert all(p["writer"].startswith(shard["metadata"]["name"]) for p in status["partitionLag"])

    async def scenario() -> None:
        async with _client(platform) as (load, http):
            locks = [await asyncpg.connect(dsn) for dsn in platform.ledger_dsns]
            try:
                for conn in locks:  # every batch's fencing check reads ledger_partitions: commits wait
                    await conn.execute("begin; lock table ledger_partitions in access exclusive mode")
                ids = []
                for _ in range(BACKLOG_PAYMENTS):
                    status, payment = await load._post(
                        http, "/v1/payments", load.payment_body(300), f"e2e-backlog-{uuid.uuid4()}"
                    )
                    assert status == 200, payment
                    ids.append(payment["id"])
                lag = await asyncio.to_thread(_wait, "lag > 0 in a shard's status", lambda: _lagging(platform),
                                              LAG_BOUND_S)  # fmt: skip
                assert lag > 0
                lagging = [s for s in _shards(platform) if s["status"].get("lagRecords", 0) > 0]
                assert any(p["records"] > 0 for s in lagging for p in s["status"]["partitionLag"])
            finally:
                for conn in locks:
                    await conn.close()  # the transaction ends, the lock with it
            for payment_id in ids:
                async with http.get(load._url(f"/v1/payments/{payment_id}?wait_ms=5000"), headers=load._headers) as r:
                    assert (await r.json())["status"] == "succeeded"

    asyncio.run(scenario())
    _wait("every shard caught up again", lambda: _all_caught_up(platform), LAG_BOUND_S)
