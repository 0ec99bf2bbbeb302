"""Settlement metrics (the payment settler, or a worker settling in-process): payments by the status they
reach, acceptance-to-answer latency, the outbox's age."""

import pytest

from payplane.adapters.payments_store import StatusChange
from payplane.platform.metrics import PaymentWorkerMetrics, SettlementMetrics


def test_status_changes_are_counted_and_first_answers_timed() -> None:
    metrics = SettlementMetrics()
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


def test_outbox_age_follows_the_oldest_unpublished_row(monkeypatch: pytest.MonkeyPatch) -> None:
    metrics = SettlementMetrics()

    def age() -> float | None:
        return metrics.registry.get_sample_value("payplane_outbox_age_seconds", {"outbox": "payments"})

    assert age() == 0.0  # nothing reported yet
    now_s = 1_000.0
    monkeypatch.setattr("payplane.platform.metrics.time.time", lambda: now_s)
    metrics.outbox.oldest_unpublished(990.0)
    assert age() == pytest.approx(10.0)
    now_s = 1_030.0  # nothing published meanwhile: the age keeps growing between reports
    assert age() == pytest.approx(40.0)
    metrics.outbox.oldest_unpublished(None)  # drained
    assert age() == 0.0
    metrics.outbox.oldest_unpublished(2_000.0)  # a clock step backwards never gives a negative age
    assert age() == 0.0


def test_a_worker_settling_in_process_exports_the_settlement_series_and_one_beside_a_settler_does_not() -> None:
    def names(metrics: PaymentWorkerMetrics) -> set[str]:
        return {family.name for family in metrics.registry.collect()}

    settling = PaymentWorkerMetrics()
    assert settling.settlement is not None
    assert {"payplane_payments", "payplane_outbox_age_seconds"} <= names(settling)
    assert "payplane_payment_create_batch_size" in names(settling)
    serving_only = PaymentWorkerMetrics(settlement=False)
    assert serving_only.settlement is None
    # the settler beside it exports these; a second, idle copy would only confuse sums and alerts
    assert not {"payplane_payments", "payplane_outbox_age_seconds"} & names(serving_only)
    assert "payplane_payment_create_batch_size" in names(serving_only)
