"""The default fraud policy: rail amount limits, review threshold, shadow mode."""

import pytest

from payplane.payments.fraud import AmountLimitsPolicy, PaymentFacts, PolicyMode, Verdict


def _facts(amount: int) -> PaymentFacts:
    return PaymentFacts("client_1", amount, "EUR", "acct_1")


@pytest.mark.parametrize(
    ("amount", "verdict", "rule"),
    [
        (49, Verdict.DECLINE, "amount_below_minimum"),
        (50, Verdict.ALLOW, ""),
        (9_999, Verdict.ALLOW, ""),
        (10_000, Verdict.REVIEW, "amount_needs_review"),
        (100_000, Verdict.REVIEW, "amount_needs_review"),
        (100_001, Verdict.DECLINE, "amount_above_maximum"),
    ],
)
def test_enforced_limits(amount: int, verdict: Verdict, rule: str) -> None:
    evaluation = AmountLimitsPolicy(50, 100_000, review_at_minor=10_000).evaluate(_facts(amount))
    assert (evaluation.verdict, evaluation.rule, evaluation.shadow_verdict) == (verdict, rule, None)


def test_shadow_mode_allows_but_records_what_it_would_do() -> None:
    policy = AmountLimitsPolicy(50, 100_000, mode=PolicyMode.SHADOW, version="v7")
    evaluation = policy.evaluate(_facts(200_000))
    assert evaluation.verdict is Verdict.ALLOW
    assert evaluation.shadow_verdict is Verdict.DECLINE
    assert evaluation.policy_version == "v7"


def test_no_review_threshold_means_no_reviews() -> None:
    assert AmountLimitsPolicy(1, 10**9).evaluate(_facts(10**9)).verdict is Verdict.ALLOW
