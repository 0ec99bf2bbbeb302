"""Which idempotency lease the payment worker works under: the one the gateway took with its rate check
and sent along, or (for callers that send none, or a state it does not know) one it takes itself."""

import asyncio
from typing import Any, cast

from payplane._gen.v1 import payments_pb2 as pb
from payplane.adapters.redis_edge import Lease, LeaseState, lease_name
from payplane.services.payment_worker import PaymentService


class _OwnLeases:
    """Stands in for the worker's Redis edge: records the leases the worker takes itself."""

    def __init__(self) -> None:
        self.taken: list[tuple[str, str, str]] = []

    async def lease(self, client_id: str, key: str, fingerprint: str) -> Lease:
        self.taken.append((client_id, key, fingerprint))
        return Lease(LeaseState.ACQUIRED, lease_name(client_id, key), "own-token")


def _service(redis: _OwnLeases) -> PaymentService:
    unused = cast(Any, None)
    return PaymentService(
        unused,
        allow_list=unused,
        policy=unused,
        amount_limits=unused,
        redis=cast(Any, redis),
        retention_s=60.0,
        ledger_pools=[],
    )


def _lease(service: PaymentService, state: str, token: str = "") -> Lease | None:
    idempotency = pb.Idempotency(key="k1", fingerprint="fp", lease_state=state, lease_token=token)
    return asyncio.run(service._lease("cli_1", "k1", "fp", idempotency))


def test_the_gateways_lease_is_used_as_sent() -> None:
    own = _OwnLeases()
    service = _service(own)
    assert _lease(service, "acquired", "fp:abc") == Lease(LeaseState.ACQUIRED, lease_name("cli_1", "k1"), "fp:abc")
    assert _lease(service, "held_same_body") == Lease(LeaseState.HELD_SAME_BODY)
    assert _lease(service, "held_other_body") == Lease(LeaseState.HELD_OTHER_BODY)
    assert _lease(service, "unavailable") == Lease(LeaseState.UNAVAILABLE)
    assert own.taken == []


def test_without_a_lease_or_with_an_unknown_one_the_worker_takes_its_own() -> None:
    own = _OwnLeases()
    service = _service(own)
    assert _lease(service, "") == Lease(LeaseState.ACQUIRED, lease_name("cli_1", "k1"), "own-token")
    assert _lease(service, "from-a-newer-gateway") == Lease(LeaseState.ACQUIRED, lease_name("cli_1", "k1"), "own-token")
    assert own.taken == [("cli_1", "k1", "fp"), ("cli_1", "k1", "fp")]
