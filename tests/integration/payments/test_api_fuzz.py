"""schemathesis against the running gateway's own OpenAPI document (the one it serves at ``/openapi.json``).

Every operation gets generated requests, valid and invalid (bounded examples per operation, so the
run stays within about two minutes); each answer must not be a 5xx and must conform to the document:
a declared status code, a declared content type, a body that validates against the response schema.
Requests carry a valid API key; ids in paths are mostly random (404 is a declared answer), and one
real account and payment of the client are mixed in so the 200 paths are exercised too.
"""

import uuid
from typing import Any

import hypothesis
import pytest
import requests
import schemathesis
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from payplane.gateway.schema import openapi_document
from tests.integration.payments.conftest import Rail

EXAMPLES_PER_OPERATION = 100
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]


DOCUMENT = openapi_document()


@pytest.fixture(scope="module")
def served(rail: Rail) -> None:
    """The document the tests are generated from is the one the running gateway serves."""
    response = requests.get(rail.base_url + "/openapi.json", timeout=30)
    assert response.status_code == 200
    assert response.json() == DOCUMENT


@pytest.fixture(scope="module")
def real_ids(rail: Rail) -> dict[str, str]:
    """An account and a payment of the client, so generated calls can also hit existing objects."""
    a = rail.clients[0]
    session = requests.Session()

    def post(path: str, body: dict[str, Any]) -> dict[str, Any]:
        response = session.post(
            rail.base_url + path, json=body, headers=rail.headers(a, f"fuzz-{uuid.uuid4().hex}"), timeout=30
        )
        assert response.status_code == 200, response.text
        answer: dict[str, Any] = response.json()
        return answer

    source = post("/v1/accounts", {"currency": "EUR", "type": "external"})["id"]
    wallet = post("/v1/accounts", {"currency": "EUR"})["id"]
    payment = post(
        "/v1/payments",
        {"amount": 100, "currency": "EUR", "source": source, "destination": wallet, "capture_method": "manual"},
    )["id"]
    return {"account": wallet, "payment": payment}


schema = schemathesis.openapi.from_dict(DOCUMENT)


@schema.parametrize()
@hypothesis.settings(
    max_examples=EXAMPLES_PER_OPERATION,
    deadline=None,
    suppress_health_check=list(hypothesis.HealthCheck),
    derandomize=True,
)
def test_gateway_conforms_to_its_openapi_document(
    case: Any, rail: Rail, real_ids: dict[str, str], served: None
) -> None:
    if case.path_parameters and "id" in case.path_parameters and len(str(case.path_parameters["id"])) % 3 == 0:
        case.path_parameters["id"] = real_ids["payment" if "/payments/" in case.path else "account"]
    headers = rail.headers(rail.clients[0])
    case.call_and_validate(base_url=rail.base_url, headers=headers, checks=CHECKS, timeout=30)
