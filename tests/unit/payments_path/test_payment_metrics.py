"""Payment-worker metrics: payments by the status they reach, acceptance-to-answer latency."""

import pytest

from payplane.adapters.payments_store import StatusChange
from payplane.platform.metrics import PaymentWorkerMetrics


def test_status_changes_are_counted_and_first_answers_timed() -> None:
    metrics = PaymentWorkerMetrics()
    metrics.payments_changed(
        [
            StatusChange("pay_1", "processing", "succeeded", created_at_us=1_000_000, changed_at_us=1_040_000),
            StatusChange("pay_2", "processing", "failed", created_at_us=1_000_000, changed_at_us=1_300_000),
            StatusChange("pay_1", "succeeded", "partially_refunded", created_at_us=1_000_000, changed_at_us=9_000_000),
        ]
    )
    sample = metrics.registry.get_sample_value
    assert sample("payplane_payments_total", {"status": "succeeded"}) == 1
    assert sample("payplane_payments_total", {"status": "failed"}) == 1
    assert sample("payplane_payments_total", {"status": "partially_refunded"}) == 1
    # only the first answer after acceptance counts as settling
    assert sample("payplane_payment_accept_to_settled_seconds_count", {}) == 2
    assert sample("payplane_payment_accept_to_settled_seconds_sum", {}) == pytest.approx(0.34)
    assert sample("payplane_payment_accept_to_settled_seconds_bucket", {"le": "0.05"}) == 1
