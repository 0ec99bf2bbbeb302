"""Real local infrastructure for development and tests, on loopback.

``payplane infra up`` obtains (builds or downloads, cached under ``~/.cache/payplane``), starts and
health-checks PostgreSQL, Redis, Kafka (KRaft), etcd + kube-apiserver + controller-manager + scheduler
and a SPIRE server + agent, then writes their endpoints to the state directory for tests and tools.
"""
