"""The payment worker's delivered FraudPolicy file: loaded, reloaded on change while evaluating, an invalid
or unreadable file keeps the last valid version (logged and counted), removal means no policy; and the
``/status`` + ``/metrics`` endpoint that reports the version."""

import json
import os
import socket
import urllib.request
from pathlib import Path
from typing import Any

from payplane.adapters.policy_file import PolicyFile
from payplane.payments.fraud import PaymentFacts, ReviewThresholdPolicy, Verdict
from payplane.platform.metrics import PaymentWorkerMetrics, serve_metrics_and_status

LIMITS = ReviewThresholdPolicy()


def _write(path: Path, version: str, threshold: int, mode: str = "Enforce") -> None:
    spec = {
        "mode": mode,
        "rules": [{"name": "large", "action": "Decline", "when": {"amountAbove": {"EUR": threshold}}}],
    }
    document = {"name": "card-default", "version": version, "spec": spec}
    temporary = path.with_name(".tmp")
    temporary.write_text(json.dumps(document))
    temporary.replace(path)  # as a kubelet does


def _facts(amount: int) -> PaymentFacts:
    return PaymentFacts("client_1", amount, "EUR", "acct_1")


def _metric(metrics: PaymentWorkerMetrics, name: str, labels: dict[str, str] | None = None) -> float | None:
    return metrics.registry.get_sample_value(name, labels or {})


def test_a_changed_file_is_reloaded_and_decides_the_next_payment(tmp_path: Path) -> None:
    path = tmp_path / "fraud-policy.json"
    _write(path, "v1", 1000)
    metrics = PaymentWorkerMetrics()
    policy = PolicyFile(path, LIMITS, metrics)
    assert policy.check() is True
    assert policy.evaluate(_facts(2000)).verdict is Verdict.DECLINE
    assert policy.state.version == "v1"
    assert (
        _metric(metrics, "payplane_fraud_policy_info", {"policy": "card-default", "version": "v1", "mode": "enforce"})
        == 1
    )
    assert policy.check() is False  # unchanged: nothing re-read

    _write(path, "v2", 5000)
    assert policy.check() is True
    evaluation = policy.evaluate(_facts(2000))
    assert (evaluation.verdict, evaluation.policy_version) == (Verdict.ALLOW, "v2")
    assert policy.state.version == "v2"
    assert (
        _metric(metrics, "payplane_fraud_policy_info", {"policy": "card-default", "version": "v1", "mode": "enforce"})
        is None
    )
    assert (
        _metric(metrics, "payplane_fraud_policy_info", {"policy": "card-default", "version": "v2", "mode": "enforce"})
        == 1
    )
    assert (
        _metric(
            metrics, "payplane_fraud_decisions_total", {"mode": "enforce", "verdict": "allow", "shadow_verdict": ""}
        )
        == 1
    )


def test_an_invalid_file_keeps_the_last_valid_policy_and_is_counted(tmp_path: Path) -> None:
    path = tmp_path / "fraud-policy.json"
    _write(path, "v1", 1000)
    metrics = PaymentWorkerMetrics()
    policy = PolicyFile(path, LIMITS, metrics)
    policy.check()
    path.write_text("{not json")
    assert policy.check() is False
    assert policy.check() is False  # the same broken file is reported once
    path.write_text(json.dumps({"name": "p", "version": "v9", "spec": {"mode": "Loud"}}))
    assert policy.check() is False
    assert policy.evaluate(_facts(2000)).verdict is Verdict.DECLINE  # still v1
    assert policy.state.version == "v1"
    assert policy.state.load_failures == 2
    assert policy.state.last_error is not None
    assert "spec.mode" in policy.state.last_error
    assert _metric(metrics, "payplane_fraud_policy_load_failures_total") == 2
    _write(path, "v3", 5000)
    assert policy.check() is True
    assert policy.state.last_error is None


def test_an_unreadable_file_keeps_the_last_valid_policy(tmp_path: Path) -> None:
    path = tmp_path / "fraud-policy.json"
    _write(path, "v1", 1000)
    policy = PolicyFile(path, LIMITS)
    policy.check()
    _write(path, "v2", 5000)
    path.chmod(0)
    try:
        if os.access(path, os.R_OK):  # root reads anything: make it unreadable another way
            path.unlink()
            path.mkdir()
        assert policy.check() is False
    finally:
        if path.is_dir():
            path.rmdir()
        else:
            path.chmod(0o644)
    assert policy.state.version == "v1"
    assert policy.state.load_failures == 1


def test_no_file_means_the_default_policy_alone(tmp_path: Path) -> None:
    path = tmp_path / "fraud-policy.json"
    metrics = PaymentWorkerMetrics()
    policy = PolicyFile(path, LIMITS, metrics)
    assert policy.check() is False
    assert policy.state.version is None
    assert policy.evaluate(_facts(2000)).policy_version == "review-threshold"
    _write(path, "v1", 1000)
    assert policy.check() is True
    path.unlink()  # the rail no longer references a policy
    assert policy.check() is True
    assert policy.state.version is None
    assert policy.evaluate(_facts(2000)).verdict is Verdict.ALLOW
    assert (
        _metric(metrics, "payplane_fraud_policy_info", {"policy": "card-default", "version": "v1", "mode": "enforce"})
        is None
    )
    assert PolicyFile(None, LIMITS).check() is False


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_status_and_metrics_share_one_port(tmp_path: Path) -> None:
    path = tmp_path / "fraud-policy.json"
    _write(path, "v1", 1000)
    metrics = PaymentWorkerMetrics()
    policy = PolicyFile(path, LIMITS, metrics)
    policy.check()
    port = _free_port()
    serve_metrics_and_status(metrics.registry, port, "127.0.0.1", lambda: policy.state.to_dict())  # noqa: PLW0108 (state is replaced)
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/status", timeout=5) as response:
        assert response.headers["Content-Type"] == "application/json"
        status: dict[str, Any] = json.loads(response.read())
    assert status["fraudPolicyVersion"] == "v1"
    assert status["fraudPolicy"] == "card-default"
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        assert b'payplane_fraud_policy_info{mode="enforce",policy="card-default",version="v1"} 1.0' in response.read()
