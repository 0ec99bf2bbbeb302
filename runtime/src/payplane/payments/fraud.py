"""Fraud evaluation: the interface the payment worker calls, and the default policy it uses until a
FraudPolicy resource supplies rules (a review threshold from the worker's configuration).

The rail's amount limits are not a fraud matter: they are request validation
(``payplane.payments.limits``), checked before a policy ever sees the payment.

A verdict is ``allow`` (post the payment), ``review`` (hold the funds until an admin approves or
rejects) or ``decline`` (fail it). In ``shadow`` mode a policy's verdict is recorded but the payment is
allowed, so a new policy can be watched before it is enforced.
"""

from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol


class Verdict(StrEnum):
    ALLOW = "allow"
    REVIEW = "review"
    DECLINE = "decline"


class PolicyMode(StrEnum):
    ENFORCE = "enforce"
    SHADOW = "shadow"


@dataclass(frozen=True)
class PaymentFacts:
    """What a policy may look at (never a card number: payplane does not hold any)."""

    client_id: str
    amount_minor: int
    currency: str
    payer_account_id: str
    country: str = ""  # not carried by payments yet: rules on it never match
    card_bin: str = ""  # likewise


@dataclass(frozen=True)
class Evaluation:
    verdict: Verdict  # what the payment worker acts on
    policy_version: str
    rule: str = ""  # the rule that decided, for the payment's record and for review queues
    shadow_verdict: Verdict | None = None  # what an unenforced policy would have said


class FraudPolicy(Protocol):
    def evaluate(self, facts: PaymentFacts) -> Evaluation: ...


@dataclass(frozen=True)
class ReviewThresholdPolicy:
    """Send to review at or above ``review_at_minor`` (0 = never); allow everything else."""

    review_at_minor: int = 0
    mode: PolicyMode = PolicyMode.ENFORCE
    version: str = "review-threshold"

    def evaluate(self, facts: PaymentFacts) -> Evaluation:
        verdict, rule = self._judge(facts.amount_minor)
        if self.mode is PolicyMode.SHADOW:
            return Evaluation(Verdict.ALLOW, self.version, rule, shadow_verdict=verdict)
        return Evaluation(verdict, self.version, rule)

    def _judge(self, amount_minor: int) -> tuple[Verdict, str]:
        if self.review_at_minor and amount_minor >= self.review_at_minor:
            return Verdict.REVIEW, "amount_needs_review"
        return Verdict.ALLOW, ""
