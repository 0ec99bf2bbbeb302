"""The CRDs in crds/ as data: structural, documented, categorised, and in step with the Python side.

CEL rules are exercised against the real API server in tests/integration/operator/test_crd_validation.py.
"""

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from payplane_contracts.partitions import PARTITION_COUNT_MAX
from payplane_operator.api.conditions import ConditionType, Phase
from payplane_operator.api.v1alpha1 import (
    GROUP,
    REQUEST_BODY_BYTES_MAX,
    REQUEST_BODY_BYTES_MIN,
    VERSION,
    Kind,
    parse_policy,
    parse_rail,
    parse_shard,
)
from payplane_operator.desired.topics import rail_topics
from tests.operator_support import CRD_DIR, CRD_FILES, apply_defaults, crd_schema, load_crd

KINDS = list(CRD_FILES)


def _walk(schema: dict[str, Any], path: str) -> Iterator[tuple[str, dict[str, Any]]]:
    yield path, schema
    for key, sub in (schema.get("properties") or {}).items():
        yield from _walk(sub, f"{path}.{key}")
    if isinstance(schema.get("items"), dict):
        yield from _walk(schema["items"], f"{path}[]")
    if isinstance(schema.get("additionalProperties"), dict):
        yield from _walk(schema["additionalProperties"], f"{path}{{}}")


@pytest.mark.parametrize("kind", KINDS)
def test_every_field_is_typed_and_described(kind: str) -> None:
    for path, node in _walk(crd_schema(kind), kind):
        assert "type" in node, f"{path} has no type (structural schemas need one everywhere)"
        scalar_member = path.endswith(("[]", "{}")) and node["type"] != "object"
        if path.endswith(".metadata") or scalar_member:
            continue
        assert node.get("description", "").strip(), f"{path} has no description (kubectl explain would show nothing)"


@pytest.mark.parametrize("kind", KINDS)
def test_descriptions_state_scalar_defaults(kind: str) -> None:
    """``kubectl explain`` does not show defaults, so each description says it (and stays true)."""
    for path, node in _walk(crd_schema(kind), kind):
        default = node.get("default")
        if default is None or isinstance(default, dict | list):
            continue
        shown = str(default).lower() if isinstance(default, bool) else str(default)
        assert f"Defaults to {shown}." in node["description"], f"{path}: description does not say its default"


@pytest.mark.parametrize("kind", KINDS)
def test_names_group_category_and_status_subresource(kind: str) -> None:
    crd = load_crd(kind)
    spec = crd["spec"]
    assert spec["group"] == GROUP
    assert spec["names"]["kind"] == kind
    assert spec["names"]["plural"] == Kind(kind).plural
    assert crd["metadata"]["name"] == f"{Kind(kind).plural}.{GROUP}"
    assert "payplane" in spec["names"]["categories"]
    assert spec["names"]["shortNames"]
    (version,) = spec["versions"]
    assert version["name"] == VERSION
    assert version["storage"]
    assert version["served"]
    assert version["subresources"]["status"] == {}
    columns = [c["name"] for c in version["additionalPrinterColumns"]]
    assert "Age" in columns
    assert "Phase" in columns


def test_short_names_do_not_collide() -> None:
    names = [n for kind in KINDS for n in load_crd(kind)["spec"]["names"]["shortNames"]]
    assert len(names) == len(set(names))


def test_rail_columns_show_currency_phase_workers_partitions_endpoint() -> None:
    version = load_crd("PaymentRail")["spec"]["versions"][0]
    columns = {c["name"]: c["jsonPath"] for c in version["additionalPrinterColumns"]}
    assert columns["Currency"] == ".spec.currency"
    assert columns["Workers"] == ".status.workersReady"
    assert columns["Partitions"] == ".spec.ledger.partitions"
    assert columns["Endpoint"] == ".status.endpoint"


def test_ledger_shard_has_a_scale_subresource_over_its_writers() -> None:
    scale = load_crd("LedgerShard")["spec"]["versions"][0]["subresources"]["scale"]
    assert scale == {
        "specReplicasPath": ".spec.writers.replicas",
        "statusReplicasPath": ".status.replicas",
        "labelSelectorPath": ".status.selector",
    }


def test_conditions_schema_is_the_same_everywhere_and_a_list_map_by_type() -> None:
    schemas = [crd_schema(kind)["properties"]["status"]["properties"]["conditions"] for kind in KINDS]
    items = [s["items"] for s in schemas]
    assert all(i == items[0] for i in items)
    assert all(s["x-kubernetes-list-type"] == "map" and s["x-kubernetes-list-map-keys"] == ["type"] for s in schemas)
    assert set(items[0]["required"]) == {"type", "status", "reason", "message", "lastTransitionTime"}
    assert "observedGeneration" in items[0]["properties"]


@pytest.mark.parametrize("kind", KINDS)
def test_phase_enum_matches_the_python_side(kind: str) -> None:
    phase = crd_schema(kind)["properties"]["status"]["properties"]["phase"]
    assert phase["enum"] == [p.value for p in Phase]


def test_partition_bounds_match_the_contracts() -> None:
    rail = crd_schema("PaymentRail")["properties"]["spec"]["properties"]
    assert rail["ledger"]["properties"]["partitions"]["maximum"] == PARTITION_COUNT_MAX
    assert rail["topics"]["properties"]["partitions"]["maximum"] == PARTITION_COUNT_MAX
    shard = crd_schema("LedgerShard")["properties"]["spec"]["properties"]["partitions"]["properties"]
    assert shard["first"]["maximum"] == shard["last"]["maximum"] == PARTITION_COUNT_MAX - 1


def test_request_body_bounds_match_the_parser() -> None:
    gateway = crd_schema("PaymentRail")["properties"]["spec"]["properties"]["gateway"]["properties"]
    body_limit = gateway["requestBodyMaxBytes"]
    assert (body_limit["minimum"], body_limit["maximum"]) == (REQUEST_BODY_BYTES_MIN, REQUEST_BODY_BYTES_MAX)
    assert REQUEST_BODY_BYTES_MIN <= body_limit["default"] <= REQUEST_BODY_BYTES_MAX


def test_scaling_blocks_of_the_rail_are_identical() -> None:
    spec = crd_schema("PaymentRail")["properties"]["spec"]["properties"]
    assert spec["gateway"]["properties"]["scaling"] == spec["paymentWorker"]["properties"]["scaling"]


def _cel_rules(kind: str) -> list[str]:
    return [
        rule["rule"] for _, node in _walk(crd_schema(kind), kind) for rule in node.get("x-kubernetes-validations", [])
    ]


def test_the_promised_cel_rules_exist() -> None:
    rail = " ".join(_cel_rules("PaymentRail"))
    assert "self == oldSelf" in rail  # immutable currency, replication factor
    assert "self >= oldSelf" in rail  # partitions only grow
    assert "minReplicas <= self.autoscaling.maxReplicas" in rail
    assert "duration(self)" in rail
    assert "self.minMinor <= self.maxMinor" in rail
    shard = " ".join(_cel_rules("LedgerShard"))
    assert "self.first <= self.last" in shard
    assert "oldSelf.first" in shard
    policy = " ".join(_cel_rules("FraudPolicy"))
    assert "inList" in policy


@pytest.mark.parametrize("kind", KINDS)
def test_every_default_satisfies_its_own_schema_when_parsed(kind: str) -> None:
    """Minimal objects, defaulted by the schema, parse: the CRD is the single source of defaults."""
    minimal = {
        "PaymentRail": {
            "currency": "EUR",
            "amountLimits": {"maxMinor": 10},
            "payments": {"database": {"secretRef": {"name": "db"}}},
        },
        "LedgerShard": {
            "railRef": {"name": "r"},
            "partitions": {"first": 0, "last": 0},
            "database": {"secretRef": {"name": "db"}},
        },
        "FraudPolicy": {},
    }[kind]
    body = apply_defaults(
        crd_schema(kind),
        {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": kind,
            "metadata": {"name": "x", "namespace": "n", "uid": "u", "generation": 1},
            "spec": minimal,
        },
    )
    parse = {"PaymentRail": parse_rail, "LedgerShard": parse_shard, "FraudPolicy": parse_policy}[kind]
    parse(body)


def test_the_example_manifests_parse() -> None:
    parsers = {"PaymentRail": parse_rail, "LedgerShard": parse_shard, "FraudPolicy": parse_policy}
    examples = list(yaml.safe_load_all((CRD_DIR / "examples" / "card-eur.yaml").read_text()))
    assert {e["kind"] for e in examples} == set(parsers)
    for example in examples:
        example["metadata"].update(namespace="payments", uid="u", generation=1)
        parsers[example["kind"]](apply_defaults(crd_schema(example["kind"]), example))


def test_condition_types_documented_in_the_crds_exist() -> None:
    text = " ".join(Path(CRD_DIR / f).read_text() for f in CRD_FILES.values())
    for condition in ConditionType:
        assert condition.value in text, f"{condition.value} is not mentioned in any CRD's conditions description"


def test_default_rail_topics_fit_the_kafka_name_limit() -> None:
    longest = "r" + "x" * 39  # metadata.name is at most 40 characters (CEL rule)
    body = apply_defaults(
        crd_schema("PaymentRail"),
        {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "PaymentRail",
            "metadata": {"name": longest, "namespace": "n", "uid": "u", "generation": 1},
            "spec": {
                "currency": "EUR",
                "amountLimits": {"maxMinor": 10},
                "payments": {"database": {"secretRef": {"name": "db"}}},
            },
        },
    )
    for topic in rail_topics(parse_rail(body)):
        assert len(topic.name) <= 249
        assert re.fullmatch(r"[a-zA-Z0-9._-]+", topic.name)
