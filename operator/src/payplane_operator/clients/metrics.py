"""The operator's Prometheus metrics (what the chart's dashboards and alert rules read).

- ``payplane_operator_reconciles_total{kind, result, pass}``: every reconcile, by its result: ``ready``,
  ``not_ready`` (waiting, or a permanent problem the conditions name) or ``error`` (a dependency failed;
  kopf retries), and its pass: ``full`` or ``light`` (readiness only, after a Deployment's status change);
- ``payplane_operator_reconcile_seconds{kind}``: how long one reconcile took;
- ``payplane_operator_objects{kind, ready}``: the objects this replica reconciles, by their last Ready.
"""

from collections.abc import Hashable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

RECONCILE_SECONDS_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


def result_label(*, ready: bool, retry: bool) -> str:
    if retry:
        return "error"
    return "ready" if ready else "not_ready"


class OperatorMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.reconciles = Counter(
            "payplane_operator_reconciles_total",
            "Reconciles by object kind, result (ready, not_ready, error) and pass (full, light)",
            ["kind", "result", "pass"],
            registry=self.registry,
        )
        self.seconds = Histogram(
            "payplane_operator_reconcile_seconds",
            "Time one reconcile took",
            ["kind"],
            buckets=RECONCILE_SECONDS_BUCKETS,
            registry=self.registry,
        )
        self.objects = Gauge(
            "payplane_operator_objects",
            "Objects reconciled by this replica, by kind and last Ready status",
            ["kind", "ready"],
            registry=self.registry,
        )
        self._ready: dict[tuple[str, Hashable], bool] = {}

    def reconciled(
        self, kind: str, key: Hashable, *, ready: bool, retry: bool, seconds: float, light: bool = False
    ) -> None:
        self.reconciles.labels(kind, result_label(ready=ready, retry=retry), "light" if light else "full").inc()
        self.seconds.labels(kind).observe(seconds)
        self._ready[(kind, key)] = ready
        self._publish(kind)

    def forget(self, kind: str, key: Hashable) -> None:
        if self._ready.pop((kind, key), None) is not None:
            self._publish(kind)

    def _publish(self, kind: str) -> None:
        ready = sum(1 for (k, _), is_ready in self._ready.items() if k == kind and is_ready)
        total = sum(1 for k, _ in self._ready if k == kind)
        self.objects.labels(kind, "true").set(ready)
        self.objects.labels(kind, "false").set(total - ready)

    def serve(self, port: int, address: str = "0.0.0.0") -> None:  # noqa: S104 (scraped from outside the pod)
        start_http_server(port, addr=address, registry=self.registry)
