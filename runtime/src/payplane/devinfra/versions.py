"""Pinned versions of every infrastructure component; cache directories are keyed by them."""

from typing import Final

POSTGRES_MAJOR: Final = 15  # Debian bookworm's postgresql-15
REDIS_MAJOR: Final = 7  # Debian bookworm's redis-server 7.0
KAFKA: Final = "4.1.1"  # KRaft; aiokafka >= 0.13 negotiates API versions with 4.x brokers
KAFKA_LOG4J: Final = "2.24.3"
KUBERNETES: Final = "v1.34.4"
ETCD: Final = "v3.6.16"
SPIRE: Final = "v1.15.3"
SPIRE_API_SDK: Final = "v1.15.2"
HELM: Final = "v3.21.4"  # the chart tests' helm CLI (helm_build)
PROMETHEUS_MODULE: Final = "v0.316.0"  # github.com/prometheus/prometheus for rulecheck (the chart's rules)
