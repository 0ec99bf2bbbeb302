"""payplane operator: the control plane.

A kopf operator that reconciles PaymentRail, LedgerShard and FraudPolicy custom resources into
payment and ledger workloads, Kafka topics, SPIRE registration entries and autoscalers. It shares
names with the runtime only through ``payplane_contracts``.
"""
