"""Fraud review through the gateway: the rail's policy sends payments at or above a threshold to
``requires_review`` with their funds held; an admin-role client lists the queue and approves (the hold
is posted, or kept for a manual capture) or rejects (the hold is voided). Clients cannot decide, and
each decision is idempotent."""

from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import asyncpg
import pytest

from payplane.adapters import api_clients
from payplane.adapters.ledger_verify import verify
from tests.integration.conftest import Infra
from tests.integration.payments.fault_checks import PayingClient, new_key
from tests.integration.payments.rail_stack import Client, Procs, RailStack, rail_stack
from tests.integration.test_spire import Spire

REVIEW_AT_MINOR = 1000
WAIT_MS = 8000


@dataclass
class ReviewRail:
    stack: RailStack
    merchant: PayingClient
    admin: PayingClient
    source: str
    wallet: str


@pytest.fixture(scope="module")
def review_procs() -> Iterator[Procs]:
    procs = Procs()
    yield procs
    procs.stop_all()


@pytest.fixture(scope="module")
async def review_rail(infra: Infra, spire: Spire, review_procs: Procs) -> AsyncIterator[ReviewRail]:
    async with (
        rail_stack(
            spire=spire,
            procs=review_procs,
            postgres_dsn=infra["PAYPLANE_POSTGRES_DSN"],
            bootstrap=infra["KAFKA_BOOTSTRAP"],
            redis_url=infra["PAYPLANE_REDIS_URL"],
            prefix="rev",
        ) as stack,
        aiohttp.ClientSession() as http,
    ):
        stack.worker_env = {"PAYPLANE_REVIEW_AT_MINOR": str(REVIEW_AT_MINOR)}
        conn = await asyncpg.connect(stack.payments_dsn)
        try:
            created, key = await api_clients.create(conn, "risk-desk", "admin")
        finally:
            await conn.close()
        stack.spawn_writer()
        _, worker_port = stack.spawn_worker()
        _, gateway_port = stack.spawn_gateway(worker_port)
        base_url = f"http://127.0.0.1:{gateway_port}"
        merchant = PayingClient(http, stack.clients[0], base_url)
        source, wallet = await merchant.open_accounts(stack.ledger_dsn)
        yield ReviewRail(stack, merchant, PayingClient(http, Client(created.id, key), base_url), source, wallet)


async def _get(payer: PayingClient, path: str) -> tuple[int, dict[str, Any]]:
    async with payer.http.get(payer.base_url + path, headers=payer.headers()) as response:
        return response.status, await response.json()


async def _in_review(rail: ReviewRail, amount_minor: int, capture_method: str = "automatic") -> str:
    body = {"amount": amount_minor, "currency": "EUR", "source": rail.source, "destination": rail.wallet}
    status, created = await rail.merchant.post("/v1/payments", {**body, "capture_method": capture_method}, new_key())
    assert status == 200, created
    status, payment = await _get(rail.merchant, f"/v1/payments/{created['id']}?wait_ms={WAIT_MS}")
    assert payment["status"] == "requires_review", payment
    return str(created["id"])


async def _settled(rail: ReviewRail, payment_id: str) -> dict[str, Any]:
    status, payment = await _get(rail.merchant, f"/v1/payments/{payment_id}?wait_ms={WAIT_MS}")
    assert status == 200, payment
    return payment


async def _balance(rail: ReviewRail, account: str) -> dict[str, Any]:
    _, balance = await _get(rail.merchant, f"/v1/accounts/{account}/balance")
    return balance


async def test_approval_posts_the_hold_once(review_rail: ReviewRail) -> None:
    rail = review_rail
    before = await _balance(rail, rail.wallet)
    payment_id = await _in_review(rail, 2500)
    assert (await _balance(rail, rail.source))["pending_debits"] >= 2500  # the funds are held meanwhile
    status, queue = await _get(rail.admin, "/v1/reviews?limit=100")
    assert status == 200
    assert payment_id in [p["id"] for p in queue["data"]]

    key = new_key()
    status, approving, *_ = await rail.admin.post(f"/v1/payments/{payment_id}/approve", {}, key)
    assert status == 200, approving
    assert approving["pending_action"] == "approve"
    status, replay = await rail.admin.post(f"/v1/payments/{payment_id}/approve", {}, key)
    assert (status, replay) == (200, approving), "the same decision with the same key replays"
    payment = await _settled(rail, payment_id)
    assert (payment["status"], payment["amount_captured"]) == ("succeeded", 2500)
    status, again = await rail.admin.post(f"/v1/payments/{payment_id}/approve", {}, new_key())
    assert (status, again["error"]["code"]) == (409, "payment_state_invalid")
    assert (await _balance(rail, rail.wallet))["posted"] == before["posted"] + 2500
    _, queue = await _get(rail.admin, "/v1/reviews?limit=100")
    assert payment_id not in [p["id"] for p in queue["data"]]


async def test_rejection_voids_the_hold(review_rail: ReviewRail) -> None:
    rail = review_rail
    held_before = (await _balance(rail, rail.source))["pending_debits"]
    payment_id = await _in_review(rail, 4000)
    status, rejecting = await rail.admin.post(f"/v1/payments/{payment_id}/reject", {}, new_key())
    assert status == 200, rejecting
    payment = await _settled(rail, payment_id)
    assert (payment["status"], payment["failure_code"], payment["amount_captured"]) == (
        "canceled",
        "review_rejected",
        0,
    )
    assert (await _balance(rail, rail.source))["pending_debits"] == held_before
    status, late = await rail.admin.post(f"/v1/payments/{payment_id}/approve", {}, new_key())
    assert (status, late["error"]["code"]) == (409, "payment_state_invalid")


async def test_approved_manual_payment_waits_for_the_clients_capture(review_rail: ReviewRail) -> None:
    rail = review_rail
    payment_id = await _in_review(rail, 1500, capture_method="manual")
    status, approved = await rail.admin.post(f"/v1/payments/{payment_id}/approve", {}, new_key())
    assert (status, approved["status"]) == (200, "authorized")
    status, capturing = await rail.merchant.post(
        f"/v1/payments/{payment_id}/capture", {"amount_to_capture": 1000}, new_key()
    )
    assert status == 200, capturing
    payment = await _settled(rail, payment_id)
    assert (payment["status"], payment["amount_captured"]) == ("succeeded", 1000)


async def test_only_admins_decide_and_small_payments_skip_review(review_rail: ReviewRail) -> None:
    rail = review_rail
    payment_id = await _in_review(rail, 1000)
    for path in (f"/v1/payments/{payment_id}/approve", f"/v1/payments/{payment_id}/reject"):
        status, refused = await rail.merchant.post(path, {}, new_key())
        assert (status, refused["error"]["code"], refused["error"]["type"]) == (
            403,
            "admin_required",
            "permission_error",
        )
    status, refused_list = await _get(rail.merchant, "/v1/reviews")
    assert (status, refused_list["error"]["code"]) == (403, "admin_required")
    status, missing = await rail.admin.post("/v1/payments/pay_nope/approve", {}, new_key())
    assert (status, missing["error"]["code"]) == (404, "resource_missing")

    status, small = await rail.merchant.post(
        "/v1/payments",
        {"amount": REVIEW_AT_MINOR - 1, "currency": "EUR", "source": rail.source, "destination": rail.wallet},
        new_key(),
    )
    assert status == 200
    assert (await _settled(rail, small["id"]))["status"] == "succeeded"

    ledger = await asyncpg.connect(rail.stack.ledger_dsn)
    try:
        report = await verify(ledger)
    finally:
        await ledger.close()
    assert report.passed, report.render()
