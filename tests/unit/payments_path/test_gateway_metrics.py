"""The gateway reports every finished request by route template, method and status."""

from collections.abc import Sequence

import grpc.aio
from aiohttp.test_utils import TestClient, TestServer

from payplane.gateway.app import Admission, Gateway, WorkerPool
from payplane.platform.metrics import GatewayMetrics


async def _nobody(_key: str) -> None:
    return None


async def _always(_client: str, _idempotency: tuple[str, str] | None) -> Admission:
    return Admission(True)


async def _always_all(requests: Sequence[tuple[str, tuple[str, str]]]) -> list[Admission]:
    return [Admission(True)] * len(requests)


def _no_channel() -> grpc.aio.Channel:
    raise AssertionError("no request in this test reaches a payment worker")


async def test_requests_are_counted_by_route_template() -> None:
    metrics = GatewayMetrics()
    gateway = Gateway(WorkerPool([_no_channel]), _nobody, _always, _always_all, observer=metrics)
    async with TestClient(TestServer(gateway.app())) as client:
        assert (await client.get("/healthz")).status == 200
        assert (await client.get("/v1/payments/pay_123")).status == 401
        assert (await client.get("/v1/payments/pay_456")).status == 401
        assert (await client.get("/nowhere")).status == 401  # unauthenticated callers learn no routes
    sample = metrics.registry.get_sample_value
    by_id = {"route": "/v1/payments/{id}", "method": "GET"}
    assert sample("payplane_gateway_requests_total", {"route": "/healthz", "method": "GET", "code": "200"}) == 1
    assert sample("payplane_gateway_requests_total", {**by_id, "code": "401"}) == 2
    assert sample("payplane_gateway_requests_total", {"route": "(unmatched)", "method": "GET", "code": "401"}) == 1
    assert sample("payplane_gateway_request_seconds_count", by_id) == 2
