"""The only modules that talk to the outside world: the Kubernetes API, Kafka's admin API, SPIRE's server API.

Each maps its library's failures to ``ClientError`` (with ``retriable``), so the reconcilers decide what a
failure means without knowing which library raised it.
"""
