"""Composition roots: each module wires configuration, adapters and a core loop into one workload."""
