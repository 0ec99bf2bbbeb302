"""payplane runtime: the data plane of the payment platform.

The gateway takes client payments, the payment worker validates them and drives the payment state
machine, and the ledger writers post them into the double-entry ledger. ``payplane.devinfra`` brings
up the real infrastructure (PostgreSQL, Redis, Kafka, SPIRE, Kubernetes API) on this machine.
"""
