"""The default fraud policy: review threshold, shadow mode. Amount limits are not its business."""

import pytest

from payplane.payments.fraud import PaymentFacts, PolicyMode, ReviewThresholdPolicy, Verdict


def _facts(amount: int) -> PaymentFacts:
    return PaymentFacts("client_1", amount, "EUR", "acct_1")


@pytest.mark.parametrize(
    ("amount", "verdict", "rule"),
    [
        (1, Verdict.ALLOW, ""),
        (9_999, Verdict.ALLOW, ""),
        (10_000, Verdict.REVIEW, "amount_needs_review"),
        (10**15, Verdict.REVIEW, "amount_needs_review"),
    ],
)
def test_enforced_threshold(amount: int, verdict: Verdict, rule: str) -> None:
    evaluation = ReviewThresholdPolicy(review_at_minor=10_000).evaluate(_facts(amount))
    assert (evaluation.verdict, evaluation.rule, evaluation.shadow_verdict) == (verdict, rule, None)


def test_shadow_mode_allows_but_records_what_it_would_do() -> None:
    policy = ReviewThresholdPolicy(10_000, mode=PolicyMode.SHADOW, version="v7")
    evaluation = policy.evaluate(_facts(200_000))
    assert evaluation.verdict is Verdict.ALLOW
    assert evaluation.shadow_verdict is Verdict.REVIEW
    assert evaluation.policy_version == "v7"


def test_no_review_threshold_means_no_reviews() -> None:
    assert ReviewThresholdPolicy().evaluate(_facts(10**15)).verdict is Verdict.ALLOW
