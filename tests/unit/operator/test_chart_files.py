"""The chart's static files: one source for the CRDs, and dashboards and alert rules that read only
metrics the runtime and the operator really export. (Rendering, lint and install against the real API
server: tests/integration/operator/test_chart.py.)"""

import json
import re

from prometheus_client import CollectorRegistry

from payplane.platform.metrics import (
    GatewayMetrics,
    LedgerWriterMetrics,
    OutboxAge,
    PaymentWorkerMetrics,
    SettlementMetrics,
)
from payplane_operator.clients.metrics import OperatorMetrics
from tests.operator_support import CRD_DIR, REPO

CHART = REPO / "charts" / "payplane"
HISTOGRAM_SERIES = ("_bucket", "_count", "_sum")
METRIC = re.compile(r"\bpayplane_[a-z_]+\b")


def test_top_level_crds_are_links_to_the_charts_copies() -> None:
    """charts/payplane/crds/ is the one copy; crds/ only points at it, so the two cannot drift."""
    chart_crds = sorted(p.name for p in (CHART / "crds").glob("*.yaml"))
    assert chart_crds == ["fraudpolicies.yaml", "kopf-peering.yaml", "ledgershards.yaml", "paymentrails.yaml"]
    assert sorted(p.name for p in CRD_DIR.glob("*.yaml")) == chart_crds
    for name in chart_crds:
        link = CRD_DIR / name
        assert link.is_symlink(), f"crds/{name} must be a symlink into charts/payplane/crds/"
        assert link.resolve() == (CHART / "crds" / name).resolve()


def _exported() -> set[str]:
    names: set[str] = set()
    for metrics in (LedgerWriterMetrics, GatewayMetrics, PaymentWorkerMetrics, SettlementMetrics, OperatorMetrics):
        registry = CollectorRegistry()
        metrics(registry)
        for family in registry.collect():
            names.add(family.name)
            names.add(f"{family.name}_total" if family.type == "counter" else family.name)
            names.update(f"{family.name}{suffix}" for suffix in HISTOGRAM_SERIES if family.type == "histogram")
    registry = CollectorRegistry()
    OutboxAge(registry, "payments")
    names.update(family.name for family in registry.collect())
    return names


COMMENT = re.compile(r"\{\{-? /\*.*?\*/ -?\}\}", re.DOTALL)


def _used(text: str) -> set[str]:
    """Metric names in PromQL (template comments left out)."""
    return set(METRIC.findall(COMMENT.sub("", text)))


def test_alert_rules_use_only_exported_metrics() -> None:
    used = _used((CHART / "templates" / "_alerts.tpl").read_text())
    assert used, "the alert rules name no payplane metric"
    assert used <= _exported(), f"not exported by any payplane component: {sorted(used - _exported())}"


def test_dashboards_are_valid_and_use_only_exported_metrics() -> None:
    exported = _exported()
    dashboards = sorted((CHART / "dashboards").glob("*.json"))
    assert [p.stem for p in dashboards] == ["ledger", "operator", "payments"]
    for path in dashboards:
        dashboard = json.loads(path.read_text())
        assert dashboard["uid"] == f"payplane-{path.stem}"
        exprs = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
        assert exprs, f"{path.name} has no queries"
        used = {name for expr in exprs for name in _used(expr)}
        assert used <= exported, f"{path.name}: not exported: {sorted(used - exported)}"


def test_every_value_in_values_yaml_is_described() -> None:
    """Each top-level block of values.yaml starts with a comment (``helm show values`` is the manual)."""
    lines = (CHART / "values.yaml").read_text().splitlines()
    for index, line in enumerate(lines):
        if re.match(r"^[a-zA-Z]+:", line) and index > 0:
            assert lines[index - 1].startswith("#"), f"values.yaml: {line} has no description"
