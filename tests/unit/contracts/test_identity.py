"""SPIFFE IDs of payplane's workloads: templates, parsing and validation (SPIFFE-ID spec rules)."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from payplane_contracts.identity import (
    LOCAL_GID_BASE,
    LOCAL_GID_RANGE,
    SYSTEM_NAMESPACE,
    InvalidSpiffeIdError,
    SpiffeId,
    WorkloadRole,
    local_gid,
    parse_workload_id,
    service_account_name,
    workload_identity,
    workload_spiffe_id,
)

TD = "payplane.local"
dns_labels = st.from_regex(r"[a-z0-9]([-a-z0-9]{0,20}[a-z0-9])?", fullmatch=True)
per_owner_roles = st.sampled_from([WorkloadRole.GATEWAY, WorkloadRole.PAYMENT_WORKER, WorkloadRole.LEDGER_WRITER])


def test_per_rail_workload_id_follows_the_kubernetes_template() -> None:
    spiffe_id = workload_spiffe_id(TD, WorkloadRole.PAYMENT_WORKER, "payments", owner="eur-cards")

    assert str(spiffe_id) == "spiffe://payplane.local/ns/payments/sa/eur-cards-payment-worker"


def test_singletons_live_in_the_system_namespace() -> None:
    assert str(workload_spiffe_id(TD, WorkloadRole.OPERATOR)) == (
        f"spiffe://payplane.local/ns/{SYSTEM_NAMESPACE}/sa/payplane-operator"
    )
    assert workload_identity(WorkloadRole.ADMIN_CLI).service_account == "payplane-admin-cli"


def test_owner_rules_are_enforced() -> None:
    with pytest.raises(ValueError, match="owner is required"):
        service_account_name(WorkloadRole.GATEWAY)
    with pytest.raises(ValueError, match="singleton"):
        service_account_name(WorkloadRole.OPERATOR, "eur-cards")
    with pytest.raises(ValueError, match="namespace is required"):
        workload_identity(WorkloadRole.LEDGER_WRITER, owner="shard-0")


@given(role=per_owner_roles, namespace=dns_labels, owner=dns_labels)
def test_built_ids_parse_back_to_the_same_workload(role: WorkloadRole, namespace: str, owner: str) -> None:
    identity = workload_identity(role, namespace, owner)

    assert parse_workload_id(str(identity.spiffe_id(TD)), TD) == identity


@given(role=st.sampled_from(list(WorkloadRole)), namespace=dns_labels)
def test_every_role_round_trips(role: WorkloadRole, namespace: str) -> None:
    owner = None if role in {WorkloadRole.OPERATOR, WorkloadRole.ADMIN_CLI} else "x"
    identity = workload_identity(role, namespace, owner)

    assert parse_workload_id(str(identity.spiffe_id(TD)), TD).role is role


def test_parse_gives_trust_domain_path_and_segments() -> None:
    spiffe_id = SpiffeId.parse("spiffe://example.org/ns/a/sa/b")

    assert (spiffe_id.trust_domain, spiffe_id.path) == ("example.org", "/ns/a/sa/b")
    assert spiffe_id.segments == ("ns", "a", "sa", "b")
    assert SpiffeId.parse("spiffe://example.org").segments == ()


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("http://example.org/a", "starts with"),
        ("SPIFFE://example.org/a", "starts with"),
        ("spiffe://", "trust domain is empty"),
        ("spiffe:///a", "trust domain is empty"),
        ("spiffe://Example.org/a", "lowercase"),
        ("spiffe://example.org:8080/a", "lowercase"),
        ("spiffe://user@example.org/a", "lowercase"),
        ("spiffe://example.org/", "empty segment"),
        ("spiffe://example.org/a//b", "empty segment"),
        ("spiffe://example.org/a/../b", "'..'"),
        ("spiffe://example.org/./b", "'.'"),
        ("spiffe://example.org/a b", "may only hold"),
        ("spiffe://example.org/a?x=1", "query"),
        ("spiffe://example.org/a#f", "fragment"),
        ("spiffe://example.org/" + "a" * 2048, "longer than"),
    ],
)
def test_invalid_ids_are_refused_with_the_reason(text: str, reason: str) -> None:
    with pytest.raises(InvalidSpiffeIdError, match=reason):
        SpiffeId.parse(text)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("spiffe://other.domain/ns/a/sa/b-gateway", "trust domain"),
        ("spiffe://payplane.local/payments/worker", "/ns/<namespace>/sa/<service-account>"),
        ("spiffe://payplane.local/ns/a/sa/someone-else", "no payplane workload role"),
        ("spiffe://payplane.local/ns/Bad/sa/x-gateway", "DNS-1123"),
        ("spiffe://payplane.local/ns/a/sa/operator", "no payplane workload role"),
    ],
)
def test_foreign_or_unknown_workload_ids_are_refused(text: str, reason: str) -> None:
    with pytest.raises(InvalidSpiffeIdError, match=reason):
        parse_workload_id(text, TD)


def test_namespace_and_service_account_must_be_kubernetes_names() -> None:
    with pytest.raises(ValueError, match="DNS-1123 label"):
        workload_identity(WorkloadRole.GATEWAY, "Payments", "eur")
    with pytest.raises(ValueError, match="DNS-1123 subdomain"):
        workload_identity(WorkloadRole.GATEWAY, "payments", "eur_cards")


def test_local_gids_are_stable_and_in_range() -> None:
    """Pinned: a change would leave every registered local entry matching no process."""
    gid = local_gid("spiffe://payplane.local/ns/x/sa/card-eur-gateway")
    assert gid == PINNED_GATEWAY_GID
    assert LOCAL_GID_BASE <= gid < LOCAL_GID_BASE + LOCAL_GID_RANGE


PINNED_GATEWAY_GID = 3012232
