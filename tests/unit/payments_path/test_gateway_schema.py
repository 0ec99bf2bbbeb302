"""The REST API's declarations: validation rules and the committed OpenAPI document."""

from pathlib import Path

import pytest

from payplane.gateway import schema
from payplane.payments.errors import ApiError

REPO = Path(__file__).resolve().parents[3]


def test_committed_openapi_document_is_up_to_date() -> None:
    committed = (REPO / "docs" / "openapi.json").read_text()
    assert committed == schema.render_openapi(), "run `make openapi` and commit docs/openapi.json"


def test_every_post_requires_an_idempotency_key() -> None:
    document = schema.openapi_document()
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            refs = [p.get("$ref") for p in operation["parameters"]]
            assert (method == "post") == ("#/components/parameters/IdempotencyKey" in refs), (method, path)


@pytest.mark.parametrize(
    ("body", "code", "param"),
    [
        ({"amount": True, "currency": "EUR", "source": "a", "destination": "b"}, "amount_invalid", "amount"),
        ({"amount": 1.0, "currency": "EUR", "source": "a", "destination": "b"}, "amount_invalid", "amount"),
        ({"amount": 10**15 + 1, "currency": "EUR", "source": "a", "destination": "b"}, "amount_too_large", "amount"),
        ({"amount": 1, "currency": "eur", "source": "a", "destination": "b"}, "currency_invalid", "currency"),
        ({"amount": 1, "currency": "EUR", "source": 5, "destination": "b"}, "parameter_invalid", "source"),
        ({"amount": 1, "currency": "EUR", "source": "a"}, "parameter_missing", "destination"),
        (
            {"amount": 1, "currency": "EUR", "source": "a", "destination": "b", "capture_method": "x"},
            "parameter_invalid",
            "capture_method",
        ),
        (
            {"amount": 1, "currency": "EUR", "source": "a", "destination": "b", "card": "4242"},
            "parameter_unknown",
            "card",
        ),
    ],
)
def test_create_payment_refusals(body: dict[str, object], code: str, param: str) -> None:
    with pytest.raises(ApiError) as refused:
        schema.validate_body(body, schema.CREATE_PAYMENT)
    assert (refused.value.code, refused.value.param) == (code, param)


def test_query_integers_are_parsed_then_bounded() -> None:
    assert schema.validate_query({"limit": "7"}, schema.LIST_QUERY) == {"limit": 7}
    for bad in ("0", "101", "x", "9" * 40):
        with pytest.raises(ApiError):
            schema.validate_query({"limit": bad}, schema.LIST_QUERY)


def test_every_request_with_a_body_declares_413() -> None:
    document = schema.openapi_document()
    posts = [(path, op) for path, ops in document["paths"].items() for method, op in ops.items() if method == "post"]
    assert posts
    for path, operation in posts:
        assert "413" in operation["responses"], path
