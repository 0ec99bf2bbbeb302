"""The payment path end to end through the REST gateway, on real PostgreSQL, Redis, Kafka and SPIRE."""

import asyncio
import uuid
from typing import Any

import aiohttp
import asyncpg

from tests.integration.payments.conftest import Client, Rail, wait_ledger_accounts

WAIT_MS = 8000


def key() -> str:
    return f"test-{uuid.uuid4().hex}"


async def post(
    http: aiohttp.ClientSession, rail: Rail, client: Client, path: str, body: Any, idem: str | None = None
) -> tuple[int, dict[str, Any], bytes, dict[str, str]]:
    headers = rail.headers(client, idem or key())
    async with http.post(rail.base_url + path, json=body, headers=headers) as response:
        raw = await response.read()
        return response.status, await response.json(), raw, dict(response.headers)


async def get(http: aiohttp.ClientSession, rail: Rail, client: Client, path: str) -> tuple[int, dict[str, Any]]:
    async with http.get(rail.base_url + path, headers=rail.headers(client)) as response:
        return response.status, await response.json()


async def accounts(http: aiohttp.ClientSession, rail: Rail, client: Client, currency: str = "EUR") -> tuple[str, str]:
    """An external funding source and a wallet, both opened in the ledger."""
    status, source, _, _ = await post(http, rail, client, "/v1/accounts", {"currency": currency, "type": "external"})
    assert status == 200, source
    status, wallet, _, _ = await post(http, rail, client, "/v1/accounts", {"currency": currency})
    assert status == 200, wallet
    await wait_ledger_accounts(rail, [source["id"], wallet["id"]])
    return source["id"], wallet["id"]


async def settled(http: aiohttp.ClientSession, rail: Rail, client: Client, payment_id: str) -> dict[str, Any]:
    status, payment = await get(http, rail, client, f"/v1/payments/{payment_id}?wait_ms={WAIT_MS}")
    assert status == 200, payment
    return payment


async def test_automatic_payment_settles_in_the_ledger(http: aiohttp.ClientSession, rail: Rail) -> None:
    a = rail.clients[0]
    source, wallet = await accounts(http, rail, a)

    status, created, _, _ = await post(
        http, rail, a, "/v1/payments", {"amount": 1250, "currency": "EUR", "source": source, "destination": wallet}
    )
    assert status == 200, created
    assert created["id"].startswith("pay_")
    assert created["status"] == "processing"
    payment = await settled(http, rail, a, created["id"])
    assert payment["status"] == "succeeded"
    assert payment["amount_captured"] == 1250

    status, balance = await get(http, rail, a, f"/v1/accounts/{wallet}/balance")
    assert status == 200
    assert balance["posted"] == 1250
    assert balance["available"] == 1250


async def test_insufficient_funds_fails_the_payment(http: aiohttp.ClientSession, rail: Rail) -> None:
    a = rail.clients[0]
    _, empty = await accounts(http, rail, a)
    _, other = await accounts(http, rail, a)

    status, created, _, _ = await post(
        http, rail, a, "/v1/payments", {"amount": 5, "currency": "EUR", "source": empty, "destination": other}
    )
    assert status == 200, created
    payment = await settled(http, rail, a, created["id"])
    assert (payment["status"], payment["failure_code"]) == ("failed", "insufficient_funds")


async def test_manual_capture_in_part_then_refunds_in_parts(http: aiohttp.ClientSession, rail: Rail) -> None:
    a = rail.clients[0]
    source, wallet = await accounts(http, rail, a)
    body = {"amount": 1000, "currency": "EUR", "source": source, "destination": wallet, "capture_method": "manual"}
    _, created, _, _ = await post(http, rail, a, "/v1/payments", body)
    payment = await settled(http, rail, a, created["id"])
    assert payment["status"] == "authorized"
    # the hold lives on the payer's side (source and wallet may sit on different ledger partitions, where the
    # credit only arrives when the hold is posted)
    _, held = await get(http, rail, a, f"/v1/accounts/{source}/balance")
    assert held["pending_debits"] == 1000
    _, balance = await get(http, rail, a, f"/v1/accounts/{wallet}/balance")
    assert balance["posted"] == 0

    status, too_much, _, _ = await post(
        http, rail, a, f"/v1/payments/{created['id']}/capture", {"amount_to_capture": 1001}
    )
    assert status == 400
    assert too_much["error"]["code"] == "amount_invalid"
    status, capturing, _, _ = await post(
        http, rail, a, f"/v1/payments/{created['id']}/capture", {"amount_to_capture": 600}
    )
    assert status == 200, capturing
    payment = await settled(http, rail, a, created["id"])
    assert (payment["status"], payment["amount_captured"]) == ("succeeded", 600)
    _, balance = await get(http, rail, a, f"/v1/accounts/{wallet}/balance")
    assert (balance["posted"], balance["pending_credits"]) == (600, 0)

    status, refund, _, _ = await post(http, rail, a, "/v1/refunds", {"payment": created["id"], "amount": 100})
    assert status == 200, refund
    assert refund["id"].startswith("re_")
    payment = await settled(http, rail, a, created["id"])
    for _ in range(100):
        if payment["status"] == "partially_refunded":
            break
        await asyncio.sleep(0.05)
        _, payment = await get(http, rail, a, f"/v1/payments/{created['id']}")
    assert (payment["status"], payment["amount_refunded"]) == ("partially_refunded", 100)

    status, over, _, _ = await post(http, rail, a, "/v1/refunds", {"payment": created["id"], "amount": 501})
    assert status == 400
    assert over["error"]["code"] == "amount_invalid"
    status, rest, _, _ = await post(http, rail, a, "/v1/refunds", {"payment": created["id"]})
    assert status == 200, rest
    assert rest["amount"] == 500
    for _ in range(200):
        _, payment = await get(http, rail, a, f"/v1/payments/{created['id']}")
        if payment["status"] == "refunded":
            break
        await asyncio.sleep(0.05)
    assert (payment["status"], payment["amount_refunded"]) == ("refunded", 600)
    _, balance = await get(http, rail, a, f"/v1/accounts/{wallet}/balance")
    assert balance["posted"] == 0


async def test_cancel_releases_the_authorization(http: aiohttp.ClientSession, rail: Rail) -> None:
    a = rail.clients[0]
    source, wallet = await accounts(http, rail, a)
    body = {"amount": 700, "currency": "EUR", "source": source, "destination": wallet, "capture_method": "manual"}
    _, created, _, _ = await post(http, rail, a, "/v1/payments", body)
    assert (await settled(http, rail, a, created["id"]))["status"] == "authorized"

    status, canceling, _, _ = await post(http, rail, a, f"/v1/payments/{created['id']}/cancel", None)
    assert status == 200, canceling
    payment = await settled(http, rail, a, created["id"])
    assert payment["status"] == "canceled"
    _, balance = await get(http, rail, a, f"/v1/accounts/{wallet}/balance")
    assert (balance["posted"], balance["pending_credits"]) == (0, 0)
    status, again, _, _ = await post(http, rail, a, f"/v1/payments/{created['id']}/capture", {})
    assert status == 409
    assert again["error"]["code"] == "payment_state_invalid"


async def test_listing_pages_with_a_cursor(http: aiohttp.ClientSession, rail: Rail) -> None:
    b = rail.clients[1]
    source, wallet = await accounts(http, rail, b, "JPY")
    ids = []
    for amount in range(1, 6):
        _, created, _, _ = await post(
            http,
            rail,
            b,
            "/v1/payments",
            {"amount": amount, "currency": "JPY", "source": source, "destination": wallet},
        )
        ids.append(created["id"])
    seen: list[str] = []
    cursor = ""
    for _ in range(10):
        suffix = f"&starting_after={cursor}" if cursor else ""
        status, page = await get(http, rail, b, f"/v1/payments?limit=2{suffix}")
        assert status == 200, page
        assert len(page["data"]) <= 2
        seen += [p["id"] for p in page["data"]]
        if not page["has_more"]:
            break
        cursor = page["data"][-1]["id"]
    assert seen == list(reversed(ids))
    for bad in ("limit=0", "limit=101", "limit=abc"):
        status, error = await get(http, rail, b, f"/v1/payments?{bad}")
        assert (status, error["error"]["param"]) == (400, "limit")


async def test_tenant_isolation(http: aiohttp.ClientSession, rail: Rail) -> None:
    a, b = rail.clients
    source, wallet = await accounts(http, rail, a)
    _, created, _, _ = await post(
        http, rail, a, "/v1/payments", {"amount": 10, "currency": "EUR", "source": source, "destination": wallet}
    )
    for path in (f"/v1/payments/{created['id']}", f"/v1/accounts/{wallet}", f"/v1/accounts/{wallet}/balance"):
        status, error = await get(http, rail, b, path)
        assert status == 404, path
        assert error["error"]["code"] == "resource_missing"
    for path, body in (
        (f"/v1/payments/{created['id']}/capture", {}),
        (f"/v1/payments/{created['id']}/cancel", {}),
        ("/v1/refunds", {"payment": created["id"]}),
        ("/v1/payments", {"amount": 1, "currency": "EUR", "source": source, "destination": wallet}),
    ):
        status, error, _, _ = await post(http, rail, b, path, body)
        assert status == 404, (path, error)
    _, listing = await get(http, rail, b, "/v1/payments?limit=100")
    assert created["id"] not in [p["id"] for p in listing["data"]]


async def test_fifty_concurrent_requests_with_one_key_make_one_payment(http: aiohttp.ClientSession, rail: Rail) -> None:
    a = rail.clients[0]
    source, wallet = await accounts(http, rail, a)
    body = {"amount": 42, "currency": "EUR", "source": source, "destination": wallet}
    idem = key()

    answers = await asyncio.gather(*[post(http, rail, a, "/v1/payments", body, idem) for _ in range(50)])

    ok = [raw for status, _, raw, _ in answers if status == 200]
    assert ok, answers[:3]
    assert len(set(ok)) == 1, "replays must be byte-identical to the first response"
    assert {status for status, *_ in answers} <= {200, 409}
    conflicts = [data for status, data, _, _ in answers if status == 409]
    assert all(c["error"]["code"] == "idempotency_key_in_use" for c in conflicts)
    conn = await asyncpg.connect(rail.payments_dsn)
    try:
        count = await conn.fetchval("select count(*) from payments where source_account_id = $1", source)
    finally:
        await conn.close()
    assert count == 1

    # after the first finished, every retry replays it, byte for byte
    status, _, raw, headers = await post(http, rail, a, "/v1/payments", body, idem)
    assert (status, raw) == (200, ok[0])
    assert headers.get("Idempotent-Replayed") == "true"


async def test_concurrent_creates_each_get_their_own_answer(http: aiohttp.ClientSession, rail: Rail) -> None:
    """Concurrent POSTs travel to the worker in shared batches (and share its group commit): each new
    payment, refusal and conflicting reuse of a key still gets its own answer, with its own trace."""
    a, b = rail.clients[0], rail.clients[1]
    (source, wallet), (source_b, wallet_b) = await asyncio.gather(accounts(http, rail, a), accounts(http, rail, b))
    keys = [key() for _ in range(30)]
    bodies = [{"amount": 100 + i, "currency": "EUR", "source": source, "destination": wallet} for i in range(30)]
    calls = [post(http, rail, a, "/v1/payments", body, k) for body, k in zip(bodies, keys, strict=True)]
    refused = {"amount": 5, "currency": "EUR", "source": source, "destination": source}  # same account twice
    calls.append(post(http, rail, a, "/v1/payments", refused))
    other_tenant = {"amount": 5, "currency": "EUR", "source": source_b, "destination": wallet_b}
    calls.append(post(http, rail, a, "/v1/payments", other_tenant))  # b's accounts: not a's to use
    calls.append(post(http, rail, b, "/v1/payments", other_tenant, keys[0]))  # a's key, b's scope: a new payment

    answers = await asyncio.gather(*calls)

    created = answers[:30]
    assert all(status == 200 for status, *_ in created), [a[1] for a in created if a[0] != 200][:3]
    assert [data["amount"] for _, data, _, _ in created] == [100 + i for i in range(30)]
    assert len({data["id"] for _, data, _, _ in created}) == 30
    assert answers[30][0] == 400
    assert answers[30][1]["error"]["code"] == "parameter_invalid"
    assert answers[31][0] == 404
    assert answers[31][1]["error"]["code"] == "resource_missing"
    assert answers[32][0] == 200
    assert answers[32][1]["id"] not in {data["id"] for _, data, _, _ in created}

    # then duplicates and conflicting bodies of those keys, all at once: replays and 422s, nothing new
    again = await asyncio.gather(
        *[post(http, rail, a, "/v1/payments", body, k) for body, k in zip(bodies[:10], keys[:10], strict=True)],
        *[
            post(http, rail, a, "/v1/payments", {**body, "amount": 1}, k)
            for body, k in zip(bodies[10:20], keys[10:20], strict=True)
        ],
    )
    for (status, _, raw, headers), (_, _, first_raw, _) in zip(again[:10], created[:10], strict=True):
        assert (status, raw, headers.get("Idempotent-Replayed")) == (200, first_raw, "true")
    assert all(status == 422 and data["error"]["code"] == "idempotency_key_reused" for status, data, _, _ in again[10:])
    conn = await asyncpg.connect(rail.payments_dsn)
    try:
        count = await conn.fetchval("select count(*) from payments where source_account_id = $1", source)
    finally:
        await conn.close()
    assert count == 30


async def test_a_refused_request_frees_its_key_for_the_corrected_retry(http: aiohttp.ClientSession, rail: Rail) -> None:
    """The gateway takes the key's Redis lease with the rate check; the worker refuses the request and
    frees the lease at once, so the corrected request with the same key is a new payment, not a 409/422."""
    a = rail.clients[0]
    source, wallet = await accounts(http, rail, a)
    idem = key()
    wrong = {"amount": 9, "currency": "EUR", "source": source, "destination": source}
    status, error, _, _ = await post(http, rail, a, "/v1/payments", wrong, idem)
    assert (status, error["error"]["code"]) == (400, "parameter_invalid")

    corrected = {**wrong, "destination": wallet}
    status, payment, _, _ = await post(http, rail, a, "/v1/payments", corrected, idem)
    assert status == 200, payment
    assert (payment["amount"], payment["destination"]) == (9, wallet)


async def test_same_key_other_body_is_422_and_redis_loss_never_duplicates(
    http: aiohttp.ClientSession, rail: Rail
) -> None:
    import redis.asyncio as aioredis  # noqa: PLC0415

    a = rail.clients[0]
    source, wallet = await accounts(http, rail, a)
    body = {"amount": 77, "currency": "EUR", "source": source, "destination": wallet}
    idem = key()
    status, first, raw, _ = await post(http, rail, a, "/v1/payments", body, idem)
    assert status == 200

    status, error, _, _ = await post(http, rail, a, "/v1/payments", {**body, "amount": 78}, idem)
    assert status == 422
    assert error["error"]["code"] == "idempotency_key_reused"

    redis = aioredis.from_url(rail.redis_url)
    try:
        await redis.flushdb()
    finally:
        await redis.aclose()
    status, again, raw_again, _ = await post(http, rail, a, "/v1/payments", body, idem)
    assert (status, raw_again) == (200, raw)
    conn = await asyncpg.connect(rail.payments_dsn)
    try:
        count = await conn.fetchval("select count(*) from payments where source_account_id = $1", source)
    finally:
        await conn.close()
    assert count == 1
    assert again["id"] == first["id"]


async def test_bad_input_gets_a_4xx_with_a_stable_code(http: aiohttp.ClientSession, rail: Rail) -> None:
    a = rail.clients[0]
    url = rail.base_url + "/v1/payments"
    good = {"amount": 1, "currency": "EUR", "source": "acct_x", "destination": "acct_y"}
    cases: list[tuple[dict[str, str], bytes, int, str]] = [
        ({"Authorization": f"Bearer {a.key}"}, b"{}", 400, "idempotency_key_missing"),
        (rail.headers(a, key()), b"{not json", 400, "json_invalid"),
        (rail.headers(a, key()), b"[1,2]", 400, "json_invalid"),
        (rail.headers(a, key()), b'{"description": "\xff\xfe"}', 400, "json_invalid"),  # not UTF-8
        (rail.headers(a, key()), b"[" * 7000 + b"]" * 7000, 400, "json_invalid"),  # deeper than any parser
        (rail.headers(a, key()), b'{"amount": "12", "currency": "EUR"}', 400, "amount_invalid"),
        (
            rail.headers(a, key()),
            b'{"amount": 1.5, "currency": "EUR", "source": "a", "destination": "b"}',
            400,
            "amount_invalid",
        ),
        (
            rail.headers(a, key()),
            b'{"amount": -3, "currency": "EUR", "source": "a", "destination": "b"}',
            400,
            "amount_invalid",
        ),
        (
            rail.headers(a, key()),
            b'{"amount": 0, "currency": "EUR", "source": "a", "destination": "b"}',
            400,
            "amount_invalid",
        ),
        (
            rail.headers(a, key()),
            b'{"amount": 99999999999999999999, "currency": "EUR", "source": "a", "destination": "b"}',
            400,
            "amount_too_large",
        ),
        (
            rail.headers(a, key()),
            b'{"amount": 1, "currency": "XYZ", "source": "a", "destination": "b"}',
            400,
            "currency_invalid",
        ),
        (
            rail.headers(a, key()),
            b'{"amount": 1, "currency": "EUR", "source": "a", "destination": "b", "x": 1}',
            400,
            "parameter_unknown",
        ),
        (rail.headers(a, key()), b'{"amount": 1, "currency": "EUR"}', 400, "parameter_missing"),
        (rail.headers(a, key()), b"{" + b'"description": "' + b"x" * 20000 + b'"}', 413, "body_too_large"),
        ({"Idempotency-Key": key()}, b"{}", 401, "api_key_missing"),
        ({"Authorization": "Bearer sk_nope_nope", "Idempotency-Key": key()}, b"{}", 401, "api_key_invalid"),
        (rail.headers(a, "x" * 300), b"{}", 400, "idempotency_key_invalid"),
        (
            rail.headers(a, key()),
            b'{"amount": 1, "currency": "EUR", "source": "acct_x", "destination": "acct_y"}',
            404,
            "resource_missing",
        ),
    ]
    for headers, payload, expected_status, expected_code in cases:
        async with http.post(url, data=payload, headers={**headers, "Content-Type": "application/json"}) as response:
            answer = await response.json()
            assert (response.status, answer["error"]["code"]) == (expected_status, expected_code), payload[:80]
            assert set(answer["error"]) <= {"type", "code", "message", "param"}
    status, error = await get(http, rail, a, "/v1/nothing-here")
    assert (status, error["error"]["code"]) == (404, "route_missing")
    assert good  # the shape the cases above break one way each


async def test_openapi_document_is_served(http: aiohttp.ClientSession, rail: Rail) -> None:
    async with http.get(rail.base_url + "/openapi.json") as response:
        assert response.status == 200
        document = await response.json()
    assert document["openapi"] == "3.1.0"
    assert "/v1/payments/{id}/capture" in document["paths"]
