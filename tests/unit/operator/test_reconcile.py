"""The reconcilers against in-memory fakes of Kubernetes, Kafka and SPIRE: what they change, what they
report, and that doing it twice changes nothing."""

from typing import Any

from payplane_contracts.topics import RailTopics
from payplane_operator.api.v1alpha1 import API_VERSION, SecretKey
from payplane_operator.clients.errors import KubeApiError
from payplane_operator.desired.coverage import ShardRange
from payplane_operator.handlers.shards import shards_by_rail
from payplane_operator.reconcile.outcome import Outcome
from payplane_operator.reconcile.policy import policy_view, reconcile_policy
from payplane_operator.reconcile.rail import RailContext, finalize_rail, reconcile_rail, refresh_rail
from payplane_operator.reconcile.shard import finalize_shard, reconcile_shard, refresh_shard
from payplane_operator.reconcile.workloads import ChildTracker
from payplane_operator.resources import ObjectRef, TopicState
from payplane_operator.settings import WorkloadReadiness
from tests.operator_support import (
    FakeKafka,
    FakeKube,
    body,
    config,
    fake_deps,
    policy_spec,
    rail_spec,
    secret,
    shard_spec,
)

COVERED = RailContext(shards=[ShardRange("a", 0, 3), ShardRange("b", 4, 7)], policy=None, topics_owned_by=None)
NO_SHARDS = RailContext(shards=[], policy=None, topics_owned_by=None)
TOPICS = RailTopics("card-eur")


def _conditions(outcome: Outcome) -> dict[str, tuple[str, str, str]]:
    return {c["type"]: (c["status"], c["reason"], c["message"]) for c in outcome.status["conditions"]}


def _conditions_of(obj: dict[str, Any]) -> dict[str, tuple[str, str, str]]:
    return {c["type"]: (c["status"], c["reason"], c["message"]) for c in obj["status"]["conditions"]}


async def _rail(kube: FakeKube, **spec: Any) -> dict[str, Any]:
    rail = body("PaymentRail", "card-eur", rail_spec(**spec))
    kube.put(rail)
    return rail


async def _current(kube: FakeKube, kind: str = "PaymentRail", name: str = "card-eur") -> dict[str, Any]:
    found = await kube.get(ObjectRef(API_VERSION, kind, "payments", name))
    assert found is not None
    return found


async def test_a_new_rail_gets_workloads_topics_identities_and_a_status_that_says_what_is_missing() -> None:
    deps, kube, kafka, spire = fake_deps()
    rail = await _rail(kube)
    outcome = await reconcile_rail(rail, NO_SHARDS, deps, ChildTracker())
    conditions = _conditions(outcome)
    assert conditions["WorkloadsReady"][0] == "True"
    assert conditions["TopicsReady"][:2] == ("True", "TopicsInSync")
    assert conditions["IdentitiesReady"][0] == "True"
    assert conditions["PartitionsCovered"][:2] == ("False", "NoShards")
    assert conditions["Ready"][:2] == ("False", "NoShards")
    assert outcome.status["phase"] == "Degraded"
    assert outcome.status["observedGeneration"] == 1
    assert not outcome.retry
    assert len(kafka.topics) == 5
    assert kafka.topics[TOPICS.ledger_commands].partitions == 8
    assert set(spire.entries) == {
        "payplane.payments.paymentrail.card-eur.gateway",
        "payplane.payments.paymentrail.card-eur.payment-worker",
    }
    assert len(kube.of_kind("Deployment")) == 2
    assert (await _current(kube))["status"] == outcome.status
    reasons = [n.reason for n in outcome.notes]  # the controller posts them
    assert reasons.count("TopicCreated") == 5
    assert "NoShards" in reasons


async def test_reconciling_again_changes_nothing_and_says_nothing() -> None:
    deps, kube, _, _ = fake_deps()
    await _rail(kube)
    tracker = ChildTracker()
    await reconcile_rail(await _current(kube), COVERED, deps, tracker)
    writes = kube.writes
    again = await reconcile_rail(await _current(kube), COVERED, deps, tracker)
    assert kube.writes == writes
    assert again.notes == []
    assert not again.retry  # nothing to retry: kopf must not be asked to come back
    assert again.ready
    assert again.status["phase"] == "Ready"


async def test_partitions_grow_but_never_shrink() -> None:
    deps, kube, kafka, _ = fake_deps()
    await _rail(kube)
    await reconcile_rail(await _current(kube), COVERED, deps, ChildTracker())
    grown = await _rail(kube, ledger={"partitions": 12})
    outcome = await reconcile_rail(grown, COVERED, deps, ChildTracker())
    assert kafka.topics[TOPICS.ledger_commands].partitions == 12
    assert any(n.reason == "TopicPartitionsIncreased" for n in outcome.notes)
    state = kafka.topics[TOPICS.payment_events]
    kafka.topics[TOPICS.payment_events] = TopicState(state.name, 20, 1, state.configs)
    outcome = await reconcile_rail(await _current(kube), COVERED, deps, ChildTracker())
    status, reason, message = _conditions(outcome)["TopicsReady"]
    assert (status, reason) == ("False", "NotSupported")
    assert "payplane.card-eur.payments.events has 20 partitions, the spec asks for 6" in message
    assert kafka.topics[TOPICS.payment_events].partitions == 20


async def test_topic_config_drift_and_deleted_topics_are_restored() -> None:
    deps, kube, kafka, _ = fake_deps()
    await _rail(kube)
    await reconcile_rail(await _current(kube), COVERED, deps, ChildTracker())
    state = kafka.topics[TOPICS.ledger_results]
    kafka.topics[TOPICS.ledger_results] = TopicState(
        state.name, state.partitions, 1, {**state.configs, "retention.ms": "1"}
    )
    del kafka.topics[TOPICS.ledger_commands]
    outcome = await reconcile_rail(await _current(kube), COVERED, deps, ChildTracker())
    assert kafka.topics[TOPICS.ledger_results].configs["retention.ms"] == str(168 * 3600 * 1000)
    assert TOPICS.ledger_commands in kafka.topics
    assert {"TopicConfigured", "TopicCreated"} <= {n.reason for n in outcome.notes}
    assert outcome.ready


async def test_kafka_down_is_a_temporary_failure_that_does_not_stop_the_rest() -> None:
    deps, kube, kafka, spire = fake_deps()
    kafka.down = True
    outcome = await reconcile_rail(await _rail(kube), COVERED, deps, ChildTracker())
    conditions = _conditions(outcome)
    assert conditions["TopicsReady"][:2] == ("False", "KafkaError")
    assert "cannot reach Kafka" in conditions["TopicsReady"][2]
    assert conditions["Ready"][1] == "KafkaError"
    assert outcome.retry
    assert outcome.status["phase"] == "Degraded"
    assert len(kube.of_kind("Deployment")) == 2
    assert len(spire.entries) == 2


async def test_spire_entries_deleted_or_changed_by_hand_are_restored() -> None:
    deps, kube, _, spire = fake_deps()
    await _rail(kube)
    await reconcile_rail(await _current(kube), COVERED, deps, ChildTracker())
    gateway_id = "payplane.payments.paymentrail.card-eur.gateway"
    worker_id = "payplane.payments.paymentrail.card-eur.payment-worker"
    original = spire.entries[worker_id]
    del spire.entries[gateway_id]
    spire.entries[worker_id] = type(original)(**{**original.__dict__, "selectors": ()})
    outcome = await reconcile_rail(await _current(kube), COVERED, deps, ChildTracker())
    assert spire.entries[worker_id] == original
    assert gateway_id in spire.entries
    assert {"IdentityRegistered", "IdentityUpdated"} <= {n.reason for n in outcome.notes}


async def test_a_deployment_deleted_by_hand_is_recreated_and_reported() -> None:
    deps, kube, _, _ = fake_deps()
    await _rail(kube)
    tracker = ChildTracker()
    await reconcile_rail(await _current(kube), COVERED, deps, tracker)
    del kube.objects[ObjectRef("apps/v1", "Deployment", "payments", "card-eur-gateway")]
    outcome = await reconcile_rail(await _current(kube), COVERED, deps, tracker)
    assert ObjectRef("apps/v1", "Deployment", "payments", "card-eur-gateway") in kube.objects
    assert any(n.reason == "ChildRestored" and "card-eur-gateway" in n.message for n in outcome.notes)


async def test_switching_autoscaling_off_deletes_only_our_hpa() -> None:
    deps, kube, _, _ = fake_deps()
    await _rail(kube)
    await reconcile_rail(await _current(kube), COVERED, deps, ChildTracker())
    hpa = ObjectRef("autoscaling/v2", "HorizontalPodAutoscaler", "payments", "card-eur-gateway")
    assert hpa in kube.objects
    off = {
        "replicas": 1,
        "autoscaling": {"enabled": False, "minReplicas": 2, "maxReplicas": 10, "targetCPUUtilizationPercent": 70},
    }
    rail = body(
        "PaymentRail", "card-eur", rail_spec(gateway={"scaling": off}), uid=(await _current(kube))["metadata"]["uid"]
    )
    kube.put(rail)
    await reconcile_rail(rail, COVERED, deps, ChildTracker())
    assert hpa not in kube.objects
    deployment = kube.objects[ObjectRef("apps/v1", "Deployment", "payments", "card-eur-gateway")]
    assert deployment["spec"]["replicas"] == 1


async def test_an_invalid_spec_is_reported_once_and_not_retried() -> None:
    deps, kube, kafka, _ = fake_deps()
    rail = body("PaymentRail", "card-eur", rail_spec())
    rail["spec"]["gateway"]["port"] = "https"  # stored under an older, looser schema
    kube.put(rail)
    outcome = await reconcile_rail(rail, COVERED, deps, ChildTracker())
    status, reason, message = _conditions(outcome)["Ready"]
    assert (status, reason) == ("False", "InvalidSpec")
    assert message.startswith("spec.gateway.port:")
    assert outcome.status["phase"] == "Invalid"
    assert not outcome.retry
    assert kafka.topics == {}


async def test_a_rail_whose_topic_names_another_namespace_owns_leaves_kafka_alone() -> None:
    deps, kube, kafka, _ = fake_deps()
    context = RailContext(shards=COVERED.shards, policy=None, topics_owned_by="team-a")
    outcome = await reconcile_rail(await _rail(kube), context, deps, ChildTracker())
    status, reason, message = _conditions(outcome)["TopicsReady"]
    assert (status, reason) == ("False", "ResourceConflict")
    assert "namespace team-a" in message
    assert kafka.topics == {}


async def test_the_policy_is_delivered_with_its_version_and_a_broken_one_does_not_replace_it() -> None:
    deps, kube, _, _ = fake_deps()
    await _rail(kube, fraudPolicyRef={"name": "default"})
    good = policy_view(body("FraudPolicy", "default", policy_spec()))
    context = RailContext(shards=COVERED.shards, policy=good, topics_owned_by=None)
    outcome = await reconcile_rail(await _current(kube), context, deps, ChildTracker())
    assert outcome.status["fraudPolicy"] == {"name": "default", "version": good.version}
    config_map = kube.objects[ObjectRef("v1", "ConfigMap", "payments", "card-eur-config")]
    assert good.version in config_map["data"]["fraud-policy.json"]
    broken_spec = policy_spec(lists=[])
    broken = policy_view(body("FraudPolicy", "default", broken_spec))
    assert not broken.valid
    context = RailContext(shards=COVERED.shards, policy=broken, topics_owned_by=None)
    outcome = await reconcile_rail(await _current(kube), context, deps, ChildTracker())
    assert _conditions(outcome)["PolicyValid"][:2] == ("False", "PolicyInvalid")
    assert outcome.status["fraudPolicy"]["version"] == good.version
    missing = RailContext(shards=COVERED.shards, policy=None, topics_owned_by=None)
    outcome = await reconcile_rail(await _current(kube), missing, deps, ChildTracker())
    assert _conditions(outcome)["PolicyValid"][1] == "PolicyNotFound"


async def test_finalizing_removes_entries_and_keeps_topics_unless_asked() -> None:
    deps, kube, kafka, spire = fake_deps()
    await _rail(kube)
    await reconcile_rail(await _current(kube), COVERED, deps, ChildTracker())
    await finalize_rail(await _current(kube), deps, owns_topics=True)
    assert spire.entries == {}
    assert len(kafka.topics) == 5
    deleting = await _rail(kube, topics={"deletionPolicy": "Delete"})
    await reconcile_rail(deleting, COVERED, deps, ChildTracker())
    await finalize_rail(await _current(kube), deps, owns_topics=False)
    assert len(kafka.topics) == 5  # another namespace's rail owns the names
    await finalize_rail(await _current(kube), deps, owns_topics=True)
    assert kafka.topics == {}


async def test_a_shard_waits_for_its_rail_then_runs_its_writers() -> None:
    deps, kube, _, spire = fake_deps()
    shard = body("LedgerShard", "card-eur-a", shard_spec(first=0, last=3))
    kube.put(shard)
    outcome = await reconcile_shard(shard, None, deps, ChildTracker())
    conditions = _conditions(outcome)
    assert conditions["PartitionsValid"][:2] == ("False", "RailNotFound")
    assert kube.of_kind("Deployment") == []
    assert list(spire.entries) == ["payplane.payments.ledgershard.card-eur-a.ledger-writer"]
    rail = await _rail(kube)
    outcome = await reconcile_shard(await _current(kube, "LedgerShard", "card-eur-a"), rail, deps, ChildTracker())
    assert outcome.ready
    (deployment,) = kube.of_kind("Deployment")
    assert deployment["metadata"]["name"] == "card-eur-a-ledger-writer"
    assert outcome.status["replicas"] == 1
    assert outcome.status["selector"] == (
        "app.kubernetes.io/name=payplane,app.kubernetes.io/instance=card-eur-a,"
        "app.kubernetes.io/component=ledger-writer"
    )
    await finalize_shard(await _current(kube, "LedgerShard", "card-eur-a"), deps)
    assert spire.entries == {}


async def test_a_shard_beyond_its_rails_partitions_is_not_deployed() -> None:
    deps, kube, _, _ = fake_deps()
    shard = body("LedgerShard", "card-eur-z", shard_spec(first=8, last=9))
    kube.put(shard)
    outcome = await reconcile_shard(shard, await _rail(kube), deps, ChildTracker())
    status, reason, message = _conditions(outcome)["PartitionsValid"]
    assert (status, reason) == ("False", "PartitionsOutsideRail")
    assert "8-9 reach beyond rail card-eur's 8 partitions (0-7)" in message
    assert kube.of_kind("Deployment") == []


async def test_kubernetes_refusing_a_child_is_reported_with_its_message() -> None:
    deps, kube, _, _ = fake_deps()
    rail = await _rail(kube)
    kube.fail = KubeApiError("PATCH deployments/x: 403 forbidden", status=403)
    outcome = await reconcile_rail(rail, COVERED, deps, ChildTracker())
    kube.fail = None
    status, reason, message = _conditions(outcome)["WorkloadsReady"]
    assert (status, reason) == ("False", "KubernetesError")
    assert "403 forbidden" in message
    assert not outcome.retry  # RBAC will not fix itself; the drift timer tries again anyway


async def test_a_status_that_cannot_be_written_asks_for_a_retry() -> None:
    deps, kube, _, _ = fake_deps()
    rail = await _rail(kube)
    kube.fail_status = KubeApiError("PATCH paymentrails/card-eur/status: 503", status=503)
    outcome = await reconcile_rail(rail, COVERED, deps, ChildTracker())
    assert outcome.retry
    assert "status" not in rail


async def test_a_policy_gets_a_version_and_an_invalid_one_says_why() -> None:
    deps, kube, _, _ = fake_deps()
    policy = body("FraudPolicy", "default", policy_spec())
    kube.put(policy)
    outcome = await reconcile_policy(policy, deps)
    assert outcome.status["version"] == policy_view(policy).version
    assert outcome.status["rules"] == 2
    assert outcome.status["phase"] == "Ready"
    broken = body("FraudPolicy", "broken", policy_spec(lists=[]))
    kube.put(broken)
    outcome = await reconcile_policy(broken, deps)
    assert _conditions(outcome)["PolicyValid"][:2] == ("False", "PolicyInvalid")
    assert "version" not in outcome.status
    assert outcome.status["phase"] == "Invalid"


def test_fakes_follow_kafka_in_refusing_to_shrink() -> None:
    assert FakeKafka().topics == {}


async def test_a_shard_is_not_ready_until_its_database_secret_holds_the_key() -> None:
    deps, kube, _, _ = fake_deps()
    rail = await _rail(kube)
    shard = body("LedgerShard", "card-eur-a", shard_spec(first=0, last=7, database={"secretRef": {"name": "ledger"}}))
    kube.put(shard)
    outcome = await reconcile_shard(shard, rail, deps, ChildTracker())
    conditions = _conditions(outcome)
    assert conditions["DatabaseSecretReady"] == (
        "False",
        "SecretNotFound",
        "Secret ledger does not exist in namespace payments",
    )
    assert conditions["Ready"][:2] == ("False", "SecretNotFound")
    assert outcome.retry, "a missing Secret is waited for with backoff (Secrets are not watched)"

    kube.put(secret("ledger", url="postgresql://u@db/ledger"))
    outcome = await reconcile_shard(await _current(kube, "LedgerShard", "card-eur-a"), rail, deps, ChildTracker())
    status, reason, message = _conditions(outcome)["DatabaseSecretReady"]
    assert (status, reason) == ("False", "SecretKeyMissing")
    assert message == "Secret ledger has no (non-empty) key dsn; its keys: url"
    assert "postgresql" not in str(outcome.status), "Secret values never reach the status"

    kube.put(secret("ledger", dsn="postgresql://u@db/ledger"))
    outcome = await reconcile_shard(await _current(kube, "LedgerShard", "card-eur-a"), rail, deps, ChildTracker())
    assert _conditions(outcome)["DatabaseSecretReady"] == ("True", "SecretsFound", "Secret keys present: ledger/dsn")
    assert outcome.ready
    assert not outcome.retry


async def test_a_rail_names_every_secret_it_is_missing() -> None:
    deps, kube, _, _ = fake_deps()
    rail = await _rail(kube, redis={"secretRef": {"name": "redis"}})
    kube.objects.pop(ObjectRef("v1", "Secret", "payments", "payments-db"))
    outcome = await reconcile_rail(rail, COVERED, deps, ChildTracker())
    status, reason, message = _conditions(outcome)["SecretsReady"]
    assert (status, reason) == ("False", "SecretNotFound")
    assert message == (
        "Secret payments-db does not exist in namespace payments; Secret redis does not exist in namespace payments"
    )
    assert not outcome.ready


async def test_the_workers_follow_the_rails_shards_and_wait_for_their_database_secrets() -> None:
    deps, kube, _, _ = fake_deps()
    rail = await _rail(kube)

    def worker_dsn_secrets() -> list[str]:
        (worker,) = [d for d in kube.of_kind("Deployment") if d["metadata"]["name"] == "card-eur-payment-worker"]
        env = worker["spec"]["template"]["spec"]["containers"][0]["env"]
        return [e["valueFrom"]["secretKeyRef"]["name"] for e in env if e["name"].startswith("PAYPLANE_SHARD_DSN_")]

    database = SecretKey("card-eur-db", "dsn")
    one = RailContext(shards=[ShardRange("a", 0, 7, database)], policy=None, topics_owned_by=None)
    assert (await reconcile_rail(rail, one, deps, ChildTracker())).ready
    assert worker_dsn_secrets() == ["card-eur-db"]

    second = SecretKey("card-eur-b-db", "dsn")  # a shard added whose Secret does not exist yet
    two = RailContext(
        shards=[ShardRange("a", 0, 3, database), ShardRange("b", 4, 7, second)], policy=None, topics_owned_by=None
    )
    outcome = await reconcile_rail(await _current(kube), two, deps, ChildTracker())
    assert worker_dsn_secrets() == ["card-eur-db", "card-eur-b-db"]
    status, reason, message = _conditions(outcome)["SecretsReady"]
    assert (status, reason, message) == (
        "False",
        "SecretNotFound",
        "Secret card-eur-b-db does not exist in namespace payments",
    )


def test_the_shard_index_carries_each_shards_database_secret() -> None:
    spec = shard_spec(first=0, last=3)
    meta: dict[str, Any] = {}
    assert shards_by_rail(spec=spec, namespace="payments", name="a", meta=meta) == {  # type: ignore[arg-type]
        ("payments", "card-eur"): ShardRange("a", 0, 3, SecretKey("card-eur-db", "dsn"))
    }
    (indexed,) = shards_by_rail(
        spec={**spec, "database": {"secretRef": {"name": "x", "key": "uri"}}}, namespace="payments", name="a", meta=meta
    ).values()  # type: ignore[arg-type,union-attr]
    assert indexed.database == SecretKey("x", "uri")


def _foreign(kind: str, api_version: str, name: str, **metadata: Any) -> dict[str, Any]:
    return {
        "apiVersion": api_version,
        "kind": kind,
        "metadata": {"name": name, "namespace": "payments", "uid": f"uid-{name}", **metadata},
        "data": {"owner": "someone else"},
    }


async def test_same_named_objects_that_are_not_the_rails_are_left_alone_and_named() -> None:
    deps, kube, _, _ = fake_deps()
    rail = await _rail(kube)
    deployment = _foreign("Deployment", "apps/v1", "card-eur-gateway", labels={"team": "web"})
    config_map = _foreign(
        "ConfigMap",
        "v1",
        "card-eur-config",
        ownerReferences=[{"apiVersion": "v1", "kind": "Thing", "name": "x", "uid": "other", "controller": True}],
    )
    kube.put(deployment)
    kube.put(config_map)
    outcome = await reconcile_rail(rail, COVERED, deps, ChildTracker())
    status, reason, message = _conditions(outcome)["WorkloadsReady"]
    assert (status, reason) == ("False", "ResourceConflict")
    assert "Deployment card-eur-gateway already exists and was not made for PaymentRail card-eur" in message
    assert "ConfigMap card-eur-config belongs to Thing x" in message
    assert _conditions(outcome)["Ready"][:2] == ("False", "ResourceConflict")
    assert await kube.get(ObjectRef.of(deployment)) == deployment, "not overwritten"
    assert await kube.get(ObjectRef.of(config_map)) == config_map, "not overwritten"
    assert len(kube.of_kind("Deployment")) == 2, "the rail's other children are applied"
    assert not outcome.retry, "waits for a person (the drift timer re-checks)"

    await kube.delete(ObjectRef.of(deployment))
    await kube.delete(ObjectRef.of(config_map))
    outcome = await reconcile_rail(await _current(kube), COVERED, deps, ChildTracker())
    assert _conditions(outcome)["WorkloadsReady"][0] == "True"


async def test_an_orphan_of_an_earlier_rail_of_the_same_name_is_adopted() -> None:
    deps, kube, _, _ = fake_deps()
    rail = await _rail(kube)
    orphan = _foreign(
        "Service",
        "v1",
        "card-eur-gateway",
        labels={"app.kubernetes.io/managed-by": "payplane-operator", "app.kubernetes.io/instance": "card-eur"},
    )
    kube.put(orphan)
    outcome = await reconcile_rail(rail, COVERED, deps, ChildTracker())
    assert _conditions(outcome)["WorkloadsReady"][0] == "True"
    adopted = await kube.get(ObjectRef.of(orphan))
    assert adopted is not None
    assert adopted["metadata"]["ownerReferences"][0]["uid"] == rail["metadata"]["uid"]


def _available(deployment: dict[str, Any]) -> None:
    """What the Deployment controller writes once the pods run (status only: generation unchanged)."""
    replicas = deployment["spec"].get("replicas", 1)
    deployment["status"] = {
        "observedGeneration": deployment["metadata"]["generation"],
        "replicas": replicas,
        "readyReplicas": replicas,
        "updatedReplicas": replicas,
        "conditions": [{"type": "Available", "status": "True"}],
    }


async def test_a_status_only_change_of_a_deployment_is_judged_without_reapplying() -> None:
    deps, kube, _, spire = fake_deps(config(readiness=WorkloadReadiness.AVAILABLE))
    tracker = ChildTracker()
    await reconcile_rail(await _rail(kube), COVERED, deps, tracker)
    rail = await _current(kube)
    assert _conditions_of(rail)["WorkloadsReady"][:2] == ("False", "Progressing")
    for deployment in kube.of_kind("Deployment"):
        _available(deployment)
    applies, spire_calls = kube.applies, spire.calls

    outcome = await refresh_rail(rail, deps, tracker)
    assert outcome is not None
    assert kube.applies == applies, "the light pass applies nothing"
    assert spire.calls == spire_calls, "nor asks SPIRE"
    assert outcome.ready
    assert outcome.status["workersReady"] == "2/2"  # autoscaled: one pod each until the HPA says otherwise
    assert _conditions(outcome)["WorkloadsReady"][:2] == ("True", "Applied")
    assert (await _current(kube))["status"] == outcome.status
    assert "Ready" in [n.reason for n in outcome.notes]

    (gateway, _) = kube.of_kind("Deployment")
    gateway["metadata"]["generation"] = 2  # a hand edit of its spec
    assert await refresh_rail(await _current(kube), deps, tracker) is None, "a spec change needs the full pass"
    assert await refresh_rail(await _current(kube), deps, ChildTracker()) is None, "unknown children too"


async def test_the_light_pass_declines_after_a_failed_full_pass() -> None:
    deps, kube, _, _ = fake_deps()
    tracker = ChildTracker()
    kube.put(_foreign("Service", "v1", "card-eur-gateway"))
    await reconcile_rail(await _rail(kube), COVERED, deps, tracker)
    rail = await _current(kube)
    assert _conditions_of(rail)["WorkloadsReady"][1] == "ResourceConflict"
    assert await refresh_rail(rail, deps, tracker) is None


async def test_a_shards_light_pass_updates_its_writer_counts() -> None:
    deps, kube, _, _ = fake_deps(config(readiness=WorkloadReadiness.AVAILABLE))
    tracker = ChildTracker()
    rail = await _rail(kube)
    kube.put(body("LedgerShard", "card-eur-a", shard_spec(first=0, last=7, writers={"replicas": 2})))
    await reconcile_shard(await _current(kube, "LedgerShard", "card-eur-a"), rail, deps, tracker)
    (writer,) = kube.of_kind("Deployment")
    _available(writer)
    outcome = await refresh_shard(await _current(kube, "LedgerShard", "card-eur-a"), deps, tracker)
    assert outcome is not None
    assert outcome.ready
    assert (outcome.status["replicas"], outcome.status["writersReady"]) == (2, "2/2")
