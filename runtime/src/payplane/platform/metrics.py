"""Prometheus metrics of payplane's processes (names follow ``payplane_<component>_<what>_<unit>``)."""

import json
import threading
import time
from collections import Counter as CountOf
from collections.abc import Callable, Iterable, Mapping, Sequence
from socketserver import ThreadingMixIn
from typing import Any, Protocol
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, make_wsgi_app, start_http_server

StatusSource = Callable[[], Mapping[str, Any]]
STATUS_PATH = "/status"


class _ThreadingServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


def serve_metrics_and_status(registry: CollectorRegistry, port: int, address: str, status: StatusSource) -> None:
    """``/metrics`` (Prometheus) and ``GET /status`` (``status()`` as JSON: what the operator reads into
    the custom resources' status) on one port, from a daemon thread. ``status`` runs on that thread: it
    must only read immutable snapshots."""
    metrics_app = make_wsgi_app(registry)

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if environ.get("PATH_INFO") != STATUS_PATH:
            return metrics_app(environ, start_response)  # type: ignore[no-any-return]
        if environ.get("REQUEST_METHOD") not in ("GET", "HEAD"):
            start_response("405 Method Not Allowed", [("Allow", "GET, HEAD"), ("Content-Length", "0")])
            return [b""]
        body = json.dumps(status(), sort_keys=True).encode()
        headers = [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
        start_response("200 OK", headers)
        return [body]

    server = make_server(address, port, app, _ThreadingServer, handler_class=_QuietHandler)
    threading.Thread(target=server.serve_forever, name="metrics-http", daemon=True).start()


BATCH_SECONDS_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
BATCH_SIZE_BUCKETS = (1, 10, 50, 100, 250, 500, 1000, 2000, 5000)


class OutboxAge:
    """``payplane_outbox_age_seconds{outbox}``: how long the oldest unpublished outbox row has waited
    (0 when the relay has published everything it saw). Computed at scrape time from the creation time
    the relay last reported, so it keeps growing while nothing can be published."""

    def __init__(self, registry: CollectorRegistry, outbox: str) -> None:
        self._oldest_created_at_s: float | None = None
        self.gauge = Gauge(
            "payplane_outbox_age_seconds",
            "Age of the oldest unpublished outbox row (0 when none)",
            ["outbox"],
            registry=registry,
        )
        self.gauge.labels(outbox).set_function(self.age_s)

    def oldest_unpublished(self, created_at_s: float | None) -> None:
        self._oldest_created_at_s = created_at_s

    def age_s(self) -> float:
        oldest = self._oldest_created_at_s
        return max(0.0, time.time() - oldest) if oldest is not None else 0.0


class LedgerWriterMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.transfers = Counter(
            "payplane_ledger_transfers_total",
            "Transfers decided by the writer, by result",
            ["partition", "result"],
            registry=self.registry,
        )
        self.batch_size = Histogram(
            "payplane_ledger_batch_records",
            "Records per applied batch",
            ["partition"],
            buckets=BATCH_SIZE_BUCKETS,
            registry=self.registry,
        )
        self.batch_seconds = Histogram(
            "payplane_ledger_batch_seconds",
            "Time to decide and commit one batch",
            ["partition"],
            buckets=BATCH_SECONDS_BUCKETS,
            registry=self.registry,
        )
        self.dead_letters = Counter(
            "payplane_ledger_dead_letters_total",
            "Commands sent to the dead-letter topic",
            ["partition"],
            registry=self.registry,
        )
        self.committed_offset = Gauge(
            "payplane_ledger_committed_offset",
            "Next offset to consume, as committed in PostgreSQL",
            ["partition"],
            registry=self.registry,
        )
        self.consumer_lag_records = Gauge(
            "payplane_ledger_consumer_lag_records",
            "Commands in the partition not yet committed by this writer (log end minus committed offset)",
            ["partition"],
            registry=self.registry,
        )
        self.batches_redecided = Counter(
            "payplane_ledger_batches_redecided_total",
            "Batches rolled back and decided again: decided as if their transfer ids were new, they met "
            "an id applied or refused before (a redelivered command)",
            ["partition"],
            registry=self.registry,
        )
        self.outbox = OutboxAge(self.registry, "ledger")
        self.lag_by_partition: dict[int, int] = {}  # the values of consumer_lag_records, for /status

    def batch_applied(
        self, partition: int, records: int, results: CountOf[str], seconds: float, next_offset: int
    ) -> None:
        label = str(partition)
        for result, count in results.items():
            self.transfers.labels(label, result).inc(count)
        self.batch_size.labels(label).observe(records)
        self.batch_seconds.labels(label).observe(seconds)
        self.committed_offset.labels(label).set(next_offset)

    def dead_lettered(self, partition: int) -> None:
        self.dead_letters.labels(str(partition)).inc()

    def consumer_lag(self, partition: int, records: int) -> None:
        self.consumer_lag_records.labels(str(partition)).set(records)
        self.lag_by_partition = {**self.lag_by_partition, partition: records}  # replaced, never mutated

    def owned(self, partitions: Sequence[int]) -> None:
        """Forget the lag of partitions this writer no longer owns (another writer of the shard reports it)."""
        gone = [p for p in self.lag_by_partition if p not in partitions]
        if gone:
            self.lag_by_partition = {p: n for p, n in self.lag_by_partition.items() if p in partitions}
            for partition in gone:
                self.consumer_lag_records.remove(str(partition))

    def batch_redecided(self, partition: int) -> None:
        self.batches_redecided.labels(str(partition)).inc()

    def serve(self, port: int, address: str = "127.0.0.1", status: StatusSource | None = None) -> None:
        """Expose /metrics (and /status, if given) on ``address`` (the pod's IP in a Deployment:
        PAYPLANE_BIND_ADDRESS)."""
        if status is None:
            start_http_server(port, addr=address, registry=self.registry)
        else:
            serve_metrics_and_status(self.registry, port, address, status)


REQUEST_SECONDS_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class LedgerRelayMetrics:
    """``payplane ledger-relay``: the shard outbox's age (the relay's only signal; what it publishes shows
    up downstream as outcomes applied)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.outbox = OutboxAge(self.registry, "ledger")

    def serve(self, port: int, address: str = "127.0.0.1") -> None:
        start_http_server(port, addr=address, registry=self.registry)


class GatewayMetrics:
    """Requests by route template, method and status; latency per route; idempotent replays."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.requests = Counter(
            "payplane_gateway_requests_total",
            "Finished requests",
            ["route", "method", "code"],
            registry=self.registry,
        )
        self.seconds = Histogram(
            "payplane_gateway_request_seconds",
            "Time from request to response",
            ["route", "method"],
            buckets=REQUEST_SECONDS_BUCKETS,
            registry=self.registry,
        )
        self.replays = Counter(
            "payplane_gateway_idempotent_replays_total",
            "Responses replayed for a repeated Idempotency-Key",
            ["route"],
            registry=self.registry,
        )

    def request_done(self, route: str, method: str, status: int, seconds: float, replayed: bool) -> None:
        self.requests.labels(route, method, str(status)).inc()
        self.seconds.labels(route, method).observe(seconds)
        if replayed:
            self.replays.labels(route).inc()

    def serve(self, port: int, address: str = "127.0.0.1") -> None:
        start_http_server(port, addr=address, registry=self.registry)


SETTLE_SECONDS_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class SettlementMetrics:
    """What settles payments (the payments outbox relay and the consumer of ledger outcomes, in
    ``payplane payment-settler`` or inside the payment worker): payments by the status a ledger outcome
    brings them to, the time from acceptance to the ledger's answer, the outbox's age."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.payments = Counter(
            "payplane_payments_total",
            "Payments reaching a status through a ledger outcome",
            ["status"],
            registry=self.registry,
        )
        self.settle_seconds = Histogram(
            "payplane_payment_accept_to_settled_seconds",
            "From acceptance to the first ledger answer (succeeded, authorized, failed, requires_review)",
            buckets=SETTLE_SECONDS_BUCKETS,
            registry=self.registry,
        )
        self.outbox = OutboxAge(self.registry, "payments")

    def payments_changed(self, changes: "Sequence[StatusChangeLike]") -> None:
        for change in changes:
            self.payments.labels(change.new_status).inc()
            if change.old_status == "processing":
                self.settle_seconds.observe(max(0, change.changed_at_us - change.created_at_us) / 1e6)

    def serve(self, port: int, address: str = "127.0.0.1") -> None:
        start_http_server(port, addr=address, registry=self.registry)


class PaymentWorkerMetrics:
    """The payment service's batches and fraud decisions; with ``settlement``, also what settles payments
    (:class:`SettlementMetrics`, on the same registry) for a worker that settles in-process."""

    def __init__(self, registry: CollectorRegistry | None = None, *, settlement: bool = True) -> None:
        self.registry = registry or CollectorRegistry()
        self.settlement = SettlementMetrics(self.registry) if settlement else None
        self.create_batch_size = Histogram(
            "payplane_payment_create_batch_size",
            "New payments written by one statement (group commit of concurrent CreatePayment calls)",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
            registry=self.registry,
        )
        self.fraud_policy_info = Gauge(
            "payplane_fraud_policy_info",
            "The FraudPolicy version this worker evaluates payments with (1; no series when none is delivered)",
            ["policy", "version", "mode"],
            registry=self.registry,
        )
        self.fraud_policy_load_failures = Counter(
            "payplane_fraud_policy_load_failures_total",
            "Delivered FraudPolicy files that could not be read or parsed (the last valid version stays)",
            registry=self.registry,
        )
        self.fraud_decisions = Counter(
            "payplane_fraud_decisions_total",
            "Payments evaluated, by the verdict acted on and (in Shadow mode) the verdict the policy would have given",
            ["mode", "verdict", "shadow_verdict"],
            registry=self.registry,
        )

    def create_batch(self, size: int) -> None:
        self.create_batch_size.observe(size)

    def policy_loaded(self, name: str, version: str, mode: str) -> None:
        self.fraud_policy_info.clear()
        self.fraud_policy_info.labels(name, version, mode).set(1)

    def policy_removed(self) -> None:
        self.fraud_policy_info.clear()

    def policy_load_failed(self) -> None:
        self.fraud_policy_load_failures.inc()

    def evaluated(self, evaluation: "EvaluationLike", mode: str) -> None:
        shadow = evaluation.shadow_verdict.value if evaluation.shadow_verdict is not None else ""
        self.fraud_decisions.labels(mode, evaluation.verdict.value, shadow).inc()

    def serve(self, port: int, address: str = "127.0.0.1", status: StatusSource | None = None) -> None:
        if status is None:
            start_http_server(port, addr=address, registry=self.registry)
        else:
            serve_metrics_and_status(self.registry, port, address, status)


class _StrValue(Protocol):
    @property
    def value(self) -> str: ...


class EvaluationLike(Protocol):
    @property
    def verdict(self) -> _StrValue: ...
    @property
    def shadow_verdict(self) -> _StrValue | None: ...


class StatusChangeLike(Protocol):
    @property
    def new_status(self) -> str: ...
    @property
    def old_status(self) -> str: ...
    @property
    def created_at_us(self) -> int: ...
    @property
    def changed_at_us(self) -> int: ...
