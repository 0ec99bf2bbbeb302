"""``payplane up``'s pure part: the example manifests, the Secrets they need, progress lines."""

from payplane.devinfra.up import (
    EXAMPLE_FILE,
    database_name,
    example_documents,
    metrics_urls,
    pods_ready_since,
    rail_progress,
    ready_addresses,
    secrets_needed,
)


def test_the_example_is_used_as_is_by_default() -> None:
    docs = example_documents(EXAMPLE_FILE.read_text(), "card-eur")
    assert [(d["kind"], d["metadata"]["name"]) for d in docs] == [
        ("FraudPolicy", "card-default"),
        ("PaymentRail", "card-eur"),
        ("LedgerShard", "card-eur-a"),
        ("LedgerShard", "card-eur-b"),
    ]
    assert "deletionPolicy" not in docs[1]["spec"].get("topics", {})


def test_a_renamed_rail_renames_its_shards_and_secrets_and_keeps_the_rest() -> None:
    docs = example_documents(EXAMPLE_FILE.read_text(), "e2e-1234", topics_deletion_policy="Delete")
    by_name = {d["metadata"]["name"]: d for d in docs}
    assert set(by_name) == {"card-default", "e2e-1234", "e2e-1234-a", "e2e-1234-b"}
    rail = by_name["e2e-1234"]["spec"]
    assert rail["payments"]["database"]["secretRef"]["name"] == "e2e-1234-payments-db"
    assert rail["redis"]["secretRef"]["name"] == "e2e-1234-redis"
    assert rail["topics"]["deletionPolicy"] == "Delete"
    assert rail["fraudPolicyRef"]["name"] == "card-default"
    shard = by_name["e2e-1234-b"]["spec"]
    assert (shard["railRef"]["name"], shard["database"]["secretRef"]["name"]) == ("e2e-1234", "e2e-1234-b-db")


def test_every_referenced_secret_is_known_with_its_key_and_kind() -> None:
    needs = secrets_needed(example_documents(EXAMPLE_FILE.read_text(), "card-eur"))
    assert {(n.name, n.key, n.kind) for n in needs} == {
        ("card-eur-payments-db", "dsn", "postgres"),
        ("card-eur-redis", "url", "redis"),
        ("card-eur-a-db", "dsn", "postgres"),
        ("card-eur-b-db", "dsn", "postgres"),
    }


def test_database_names_are_per_namespace_sanitised_and_bounded() -> None:
    assert database_name("payments", "card-eur-a-db") == "pp_payments_card_eur_a_db"
    assert database_name("e2e-x", "card-eur-a-db") != database_name("payments", "card-eur-a-db")
    assert len(database_name("n" * 63, "s" * 253)) == 63


def test_progress_names_phase_workers_and_what_is_not_ready() -> None:
    rail = {
        "status": {
            "phase": "Provisioning",
            "workersReady": "1/4",
            "conditions": [
                {"type": "TopicsReady", "status": "True"},
                {"type": "WorkloadsReady", "status": "False", "reason": "Progressing", "message": "gateway: 0/2"},
                {"type": "Ready", "status": "False", "reason": "Progressing"},
            ],
        }
    }
    assert rail_progress(rail) == (
        "phase Provisioning, workers ready 1/4; waiting for WorkloadsReady: Progressing gateway: 0/2"
    )
    assert rail_progress({}) == "phase (none yet), workers ready -"


def test_gateway_addresses_are_the_ready_endpoints() -> None:
    slices = [
        {"endpoints": [{"addresses": ["198.18.0.2"]}, {"addresses": ["198.18.0.3"], "conditions": {"ready": False}}]}
    ]
    assert ready_addresses(slices) == ["198.18.0.2"]


def test_only_pods_made_ready_since_this_run_count() -> None:
    def pod(ready: str, since: str, deleting: bool = False) -> dict[str, object]:
        meta = {"name": "p", "deletionTimestamp": "2026-11-22T10:00:00Z"} if deleting else {"name": "p"}
        condition = {"type": "Ready", "status": ready, "lastTransitionTime": since}
        return {"metadata": meta, "status": {"conditions": [condition]}}

    pods = [
        pod("True", "2026-11-22T10:00:05Z"),
        pod("True", "2026-11-22T10:00:04Z"),  # the same second as the start: counts
        pod("True", "2026-11-22T09:59:59Z"),  # left Ready by an earlier run's kubelet
        pod("False", "2026-11-22T10:00:06Z"),
        pod("True", "2026-11-22T10:00:07Z", deleting=True),
    ]
    assert pods_ready_since(pods, "2026-11-22T10:00:04Z") == (2, 4)


def test_where_to_look_lists_every_containers_metrics_of_the_running_pods() -> None:
    def pod(name: str, address: str | None, containers: list[tuple[str, list[tuple[str, int]]]]) -> dict[str, object]:
        return {
            "metadata": {"name": name},
            "status": {"podIP": address} if address else {},
            "spec": {
                "containers": [
                    {"name": c, "ports": [{"name": n, "containerPort": p} for n, p in ports]} for c, ports in containers
                ]
            },
        }

    pods = [
        pod(
            "w-1",
            "10.0.0.5",
            [("payment-worker", [("grpc", 50051), ("metrics", 9090)]), ("payment-settler", [("settle-metrics", 9091)])],
        ),
        pod("g-1", "10.0.0.6", [("gateway", [("http", 8080), ("metrics", 9090)])]),
        pod("w-2", None, [("payment-worker", [("metrics", 9090)])]),  # not running yet: no address
    ]
    assert metrics_urls(pods) == [
        ("http://10.0.0.5:9090/metrics", "w-1 (payment-worker)"),
        ("http://10.0.0.5:9091/metrics", "w-1 (payment-settler)"),
        ("http://10.0.0.6:9090/metrics", "g-1 (gateway)"),
    ]
