"""Adapters: the only modules that import client libraries (py-spiffe, grpc, and later asyncpg,
aiokafka, redis). Domain code depends on the small typed surfaces defined here, so swapping or faking
an external system touches one module.
"""
