"""FraudPolicy rules as delivered to the workers: parsing (errors name the field) and evaluation (order,
every condition kind, default action, shadow mode, the rail's limits in front)."""

from typing import Any

import pytest

from payplane.payments.fraud import PaymentFacts, PolicyMode, ReviewThresholdPolicy, Verdict
from payplane.payments.fraud_rules import (
    CombinedPolicy,
    PolicyDocumentError,
    RulesPolicy,
    VelocityWindows,
    parse_document,
    parse_duration_s,
)


class Clock:
    def __init__(self) -> None:
        self.now_s = 1000.0

    def __call__(self) -> float:
        return self.now_s


def _document(spec: dict[str, Any], version: str = "v1") -> dict[str, Any]:
    return {"name": "card-default", "version": version, "spec": spec}


def _policy(spec: dict[str, Any], clock: Clock | None = None) -> RulesPolicy:
    return parse_document(_document(spec), VelocityWindows(), clock or Clock())


def _facts(amount: int = 100, currency: str = "EUR", account: str = "acct_1", client: str = "client_1") -> PaymentFacts:
    return PaymentFacts(client, amount, currency, account)


EXAMPLE = {
    "mode": "Enforce",
    "defaultAction": "Allow",
    "rules": [
        {"name": "trusted", "action": "Allow", "when": {"inList": {"field": "ClientId", "list": "trusted"}}},
        {"name": "blocked", "action": "Decline", "when": {"inList": {"field": "AccountId", "list": "blocked"}}},
        {"name": "large", "action": "Review", "when": {"amountAbove": {"EUR": 500_000, "USD": 1_000}}},
        {"name": "burst", "action": "Decline", "when": {"velocity": {"window": "1m", "maxCount": 3}}},
    ],
    "lists": [{"name": "blocked", "values": ["acct_bad"]}, {"name": "trusted", "values": ["client_vip"]}],
}


@pytest.mark.parametrize(
    ("facts", "verdict", "rule"),
    [
        (_facts(100), Verdict.ALLOW, ""),
        (_facts(500_000), Verdict.ALLOW, ""),  # at the threshold: not above it
        (_facts(500_001), Verdict.REVIEW, "large"),
        (_facts(1_001, "USD"), Verdict.REVIEW, "large"),  # thresholds are per currency
        (_facts(10**9, "GBP"), Verdict.ALLOW, ""),  # no threshold for GBP: never matches
        (_facts(100, account="acct_bad"), Verdict.DECLINE, "blocked"),
        (_facts(10**9, account="acct_bad", client="client_vip"), Verdict.ALLOW, "trusted"),  # first match wins
    ],
)
def test_the_first_matching_rule_decides(facts: PaymentFacts, verdict: Verdict, rule: str) -> None:
    evaluation = _policy(EXAMPLE).evaluate(facts)
    assert (evaluation.verdict, evaluation.rule, evaluation.policy_version) == (verdict, rule, "v1")


def test_velocity_counts_the_accounts_payments_within_the_window() -> None:
    clock = Clock()
    policy = _policy(EXAMPLE, clock)
    verdicts = []
    for _ in range(5):
        verdicts.append(policy.evaluate(_facts()).verdict)
        clock.now_s += 1
    assert verdicts == [Verdict.ALLOW] * 3 + [Verdict.DECLINE] * 2  # more than 3 within 1m, this one included
    assert policy.evaluate(_facts(account="acct_other")).verdict is Verdict.ALLOW  # per account
    clock.now_s += 60
    assert policy.evaluate(_facts()).verdict is Verdict.ALLOW  # the window has passed


def test_all_conditions_of_a_rule_must_match() -> None:
    spec = {
        "rules": [
            {
                "name": "big-and-blocked",
                "action": "Decline",
                "when": {"amountAbove": {"EUR": 1000}, "inList": {"field": "AccountId", "list": "watch"}},
            }
        ],
        "lists": [{"name": "watch", "values": ["acct_1"]}],
    }
    policy = _policy(spec)
    assert policy.evaluate(_facts(999)).verdict is Verdict.ALLOW
    assert policy.evaluate(_facts(1001, account="acct_2")).verdict is Verdict.ALLOW
    assert policy.evaluate(_facts(1001)).verdict is Verdict.DECLINE


def test_default_action_and_fields_payments_do_not_carry() -> None:
    spec = {
        "defaultAction": "Review",
        "rules": [{"name": "country", "action": "Decline", "when": {"inList": {"field": "Country", "list": "c"}}}],
        "lists": [{"name": "c", "values": ["", "XX"]}],
    }
    evaluation = _policy(spec).evaluate(_facts())
    assert (evaluation.verdict, evaluation.rule) == (Verdict.REVIEW, "")  # an absent country never matches


def test_shadow_mode_allows_and_reports_what_it_would_have_done() -> None:
    policy = _policy({**EXAMPLE, "mode": "Shadow"})
    assert policy.mode is PolicyMode.SHADOW
    evaluation = policy.evaluate(_facts(account="acct_bad"))
    assert (evaluation.verdict, evaluation.shadow_verdict, evaluation.rule) == (Verdict.ALLOW, Verdict.DECLINE, "")


def test_the_default_policy_applies_beside_the_rules_and_the_stricter_verdict_acts() -> None:
    base = ReviewThresholdPolicy(review_at_minor=100_000)
    combined = CombinedPolicy(base, _policy(EXAMPLE))
    assert combined.version == "v1"
    review = combined.evaluate(_facts(200_000))  # the threshold's review beats the policy's allow
    assert (review.verdict, review.rule, review.policy_version) == (Verdict.REVIEW, "amount_needs_review", "v1")
    declined = combined.evaluate(_facts(200_000, account="acct_bad"))
    assert (declined.verdict, declined.rule) == (Verdict.DECLINE, "blocked")
    shadow = CombinedPolicy(base, _policy({**EXAMPLE, "mode": "Shadow"})).evaluate(_facts(10**5, account="acct_bad"))
    assert (shadow.verdict, shadow.shadow_verdict) == (Verdict.REVIEW, Verdict.DECLINE)
    assert CombinedPolicy(base).evaluate(_facts(100)).policy_version == "review-threshold"


@pytest.mark.parametrize(
    ("document", "field"),
    [
        ([], "JSON object"),
        ({"version": "v1", "spec": {}}, "name"),
        ({"name": "p", "spec": {}}, "version"),
        ({"name": "p", "version": "v1", "spec": []}, "spec"),
        (_document({"mode": "Loud"}), "spec.mode"),
        (_document({"defaultAction": "Maybe"}), "spec.defaultAction"),
        (_document({"rules": [{"name": "r", "action": "Allow", "when": {}}]}), "spec.rules[0].when"),
        (_document({"rules": [{"name": "r", "action": "Nope", "when": {"amountAbove": {}}}]}), "spec.rules[0].action"),
        (
            _document({"rules": [{"name": "r", "action": "Allow", "when": {"amountAbove": {"eur": 1}}}]}),
            "spec.rules[0].when.amountAbove",
        ),
        (
            _document({"rules": [{"name": "r", "action": "Allow", "when": {"amountAbove": {"EUR": -1}}}]}),
            "spec.rules[0].when.amountAbove.EUR",
        ),
        (
            _document({"rules": [{"name": "r", "action": "Allow", "when": {"velocity": {"window": "soon"}}}]}),
            "spec.rules[0].when.velocity.window",
        ),
        (
            _document(
                {"rules": [{"name": "r", "action": "Allow", "when": {"velocity": {"window": "1m", "maxCount": 0}}}]}
            ),
            "spec.rules[0].when.velocity.maxCount",
        ),
        (
            _document({"rules": [{"name": "r", "action": "Allow", "when": {"inList": {"field": "AccountId"}}}]}),
            "spec.rules[0].when.inList.list",
        ),
        (
            _document(
                {"rules": [{"name": "r", "action": "Allow", "when": {"inList": {"field": "Email", "list": "x"}}}]}
            ),
            "spec.rules[0].when.inList.field",
        ),
        (
            _document(
                {
                    "rules": [
                        {"name": "r", "action": "Allow", "when": {"amountAbove": {"EUR": 1}}},
                        {"name": "r", "action": "Decline", "when": {"amountAbove": {"EUR": 2}}},
                    ]
                }
            ),
            "unique",
        ),
        (_document({"lists": [{"name": "l", "values": [1]}]}), "spec.lists[0].values"),
    ],
)
def test_a_bad_document_is_refused_naming_the_field(document: Any, field: str) -> None:
    with pytest.raises(PolicyDocumentError, match=field.replace("[", r"\[").replace("]", r"\]")):
        parse_document(document, VelocityWindows(), Clock())


@pytest.mark.parametrize(("text", "seconds"), [("45s", 45), ("10m", 600), ("1h30m", 5400), ("720h", 2_592_000)])
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration_s(text, "w") == seconds


def test_velocity_memory_is_bounded() -> None:
    windows = VelocityWindows(accounts_max=2)
    for account in ("a", "b", "c"):
        windows.record(account, 10.0, keep_s=60, keep_max=5)
    assert windows.count("a", 10.0, 60) == 0  # the least recently seen account was forgotten
    assert windows.count("c", 10.0, 60) == 1
    for _ in range(10):
        windows.record("c", 11.0, keep_s=60, keep_max=5)
    assert windows.count("c", 11.0, 60) == 5  # never more than the largest maxCount + 1 remembered
