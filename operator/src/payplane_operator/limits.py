"""Every bound the operator works within, in one place (TigerBeetle style: named, with units)."""

from typing import Final

# Retrying after a temporary failure (a dependency down): the delay doubles from min to max.
RETRY_DELAY_S_MIN: Final = 1.0
RETRY_DELAY_S_MAX: Final = 60.0

# Cross-object wake-ups (a shard changed → re-check its rail) are coalesced over this window.
POKE_DEBOUNCE_S: Final = 0.05
POKE_WORKERS: Final = 4

# The liveness probe fails when objects exist but none was reconciled for this many drift intervals.
LIVENESS_STALE_INTERVALS: Final = 5.0

# kopf watch streams: reconnect a stream that has been silent this long (kopf's known silent-watch stall).
WATCH_SERVER_TIMEOUT_S: Final = 300  # an integer: the API server refuses "300.0"
WATCH_CLIENT_TIMEOUT_S: Final = 330.0
WATCH_CONNECT_TIMEOUT_S: Final = 10.0
WATCH_INACTIVITY_TIMEOUT_S: Final = 70.0

# Kafka topic configs.
MS_PER_S: Final = 1000

# Kubernetes Event and status message sizes.
CONDITION_MESSAGE_CHARS_MAX: Final = 2048
EVENT_MESSAGE_CHARS_MAX: Final = 1024

# Reading the workloads' own status (GET /status on their metrics port): a bound per pod, and how many
# pods are asked at once (over every reconcile).
WORKLOAD_STATUS_TIMEOUT_S: Final = 2.0
WORKLOAD_STATUS_PARALLEL_MAX: Final = 16
WORKLOAD_PODS_MAX: Final = 200  # per object in status (the rest are counted, not listed)

# After a rail delivers a new FraudPolicy version, the policy re-reads its workers' versions after each of
# these delays (the drift timer covers slower kubelets).
POLICY_ROLLOUT_CHECKS_S: Final = (2.0, 4.0, 8.0, 16.0, 32.0)
