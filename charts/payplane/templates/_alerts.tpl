{{- /*
The alert rules, as a YAML list of Prometheus rule groups. Every metric named here is exported by the
runtime (runtime/src/payplane/platform/metrics.py) or the operator (payplane_operator/metrics.py);
tests/unit/operator/test_chart_monitoring.py checks that. Prometheus's own {{ $labels }} templating is
written as {{`{{ ... }}`}} so that Helm leaves it alone.
*/ -}}
{{- define "payplane.alertGroups" -}}
{{- $a := .Values.monitoring.alerts -}}
- name: payplane.payments
  rules:
    - alert: PayplanePaymentFailureRatioHigh
      expr: |
        sum(rate(payplane_payments_total{status="failed"}[10m]))
          / sum(rate(payplane_payments_total[10m])) > {{ $a.paymentFailureRatio }}
      for: 10m
      labels:
        severity: warning
      annotations:
        summary: "More than {{ mulf $a.paymentFailureRatio 100 }} % of payments end failed"
        description: "{{`Payments reaching failed are {{ $value | humanizePercentage }} of all status changes over 10 min.`}}"
    - alert: PayplanePaymentSettleLatencyHigh
      expr: |
        histogram_quantile(0.99, sum by (le) (rate(payplane_payment_accept_to_settled_seconds_bucket[5m])))
          > {{ $a.settleLatencySecondsP99 }}
      for: 10m
      labels:
        severity: warning
      annotations:
        summary: "Payments wait more than {{ $a.settleLatencySecondsP99 }} s (p99) for the ledger's answer"
        description: "{{`p99 from acceptance to the first ledger answer is {{ $value | humanizeDuration }}; check the ledger writers and Kafka.`}}"
    - alert: PayplaneGatewayErrorRatioHigh
      expr: |
        sum(rate(payplane_gateway_requests_total{code=~"5.."}[5m]))
          / sum(rate(payplane_gateway_requests_total[5m])) > {{ $a.gateway5xxRatio }}
      for: 5m
      labels:
        severity: critical
      annotations:
        summary: "The gateway answers 5xx to more than {{ mulf $a.gateway5xxRatio 100 }} % of requests"
        description: "{{`5xx ratio {{ $value | humanizePercentage }} over 5 min.`}}"
    - alert: PayplaneOutboxStuck
      expr: max by (outbox) (payplane_outbox_age_seconds) > {{ $a.outboxAgeSeconds }}
      for: 5m
      labels:
        severity: critical
      annotations:
        summary: "Outbox events wait more than {{ $a.outboxAgeSeconds }} s to be published"
        description: "{{`The oldest unpublished row of outbox {{ $labels.outbox }} is {{ $value | humanizeDuration }} old; check the relay and Kafka.`}}"
- name: payplane.ledger
  rules:
    - alert: PayplaneLedgerDeadLetters
      expr: sum by (partition) (increase(payplane_ledger_dead_letters_total[15m])) > 0
      labels:
        severity: warning
      annotations:
        summary: "Ledger commands were dead-lettered"
        description: "{{`Partition {{ $labels.partition }} sent {{ $value | humanize }} commands to its dead-letter topic in 15 min; inspect them with payplane dlq.`}}"
    - alert: PayplaneLedgerBatchSlow
      expr: |
        histogram_quantile(0.99, sum by (le, partition) (rate(payplane_ledger_batch_seconds_bucket[5m])))
          > {{ $a.ledgerBatchSecondsP99 }}
      for: 15m
      labels:
        severity: warning
      annotations:
        summary: "Ledger batches take more than {{ $a.ledgerBatchSecondsP99 }} s (p99)"
        description: "{{`Partition {{ $labels.partition }}: p99 batch time {{ $value | humanizeDuration }}.`}}"
    - alert: PayplaneLedgerLagging
      expr: max by (partition) (payplane_ledger_consumer_lag_records) > {{ $a.ledgerLagRecords }}
      for: 10m
      labels:
        severity: warning
      annotations:
        summary: "A ledger writer is more than {{ $a.ledgerLagRecords }} commands behind"
        description: "{{`Partition {{ $labels.partition }} has {{ $value | humanize }} commands not yet committed; add writers or shards, or check the shard database.`}}"
    - alert: PayplaneLedgerStalled
      expr: |
        sum(rate(payplane_gateway_requests_total{route="/v1/payments", method="POST", code=~"2.."}[10m])) > 0
          and on() sum(rate(payplane_ledger_batch_seconds_count[10m])) == 0
      for: 10m
      labels:
        severity: critical
      annotations:
        summary: "Payments are accepted but no ledger writer applies batches"
        description: "The gateway accepted payments for 10 min while no ledger batch was committed."
- name: payplane.operator
  rules:
    - alert: PayplaneOperatorReconcileErrors
      expr: sum by (kind) (rate(payplane_operator_reconciles_total{result="error"}[5m])) * 60 > {{ $a.operatorErrorsPerMinute }}
      for: 15m
      labels:
        severity: warning
      annotations:
        summary: "The operator's reconciles keep failing"
        description: "{{`{{ $value | humanize }} failed {{ $labels.kind }} reconciles a minute for 15 min; read the objects' conditions (kubectl get payplane -A).`}}"
    - alert: PayplaneObjectsNotReady
      expr: sum by (kind) (payplane_operator_objects{ready="false"}) > 0
      for: 15m
      labels:
        severity: warning
      annotations:
        summary: "payplane objects are not Ready"
        description: "{{`{{ $value }} {{ $labels.kind }} objects have not been Ready for 15 min; their Ready condition says why.`}}"
{{- end -}}
