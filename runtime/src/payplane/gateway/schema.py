"""The REST API described once, in code: request fields validate bodies and queries, and the same
declarations (with the response schemas and routes) produce the OpenAPI 3.1 document (pure).
"""

import json
from dataclasses import dataclass, field
from typing import Any, Final

from payplane.ledger.model import AMOUNT_MAX_MINOR
from payplane.payments.errors import CODES, ApiError
from payplane_contracts.currencies import MINOR_UNIT_EXPONENT

STRING_MAX: Final = 500
ID_MAX: Final = 64


@dataclass(frozen=True)
class Field:
    name: str
    kind: str  # integer | string | currency | enum
    description: str
    required: bool = False
    minimum: int | None = None
    maximum: int | None = None
    max_length: int = STRING_MAX
    enum: tuple[str, ...] = ()
    amount: bool = False  # errors say amount_invalid / amount_too_large

    def json_schema(self) -> dict[str, Any]:
        schema: dict[str, Any] = {"description": self.description}
        if self.kind == "integer":
            schema["type"] = "integer"
            if self.minimum is not None:
                schema["minimum"] = self.minimum
            if self.maximum is not None:
                schema["maximum"] = self.maximum
        elif self.kind == "currency":
            schema |= {"type": "string", "pattern": "^[A-Z]{3}$"}
        elif self.kind == "enum":
            schema |= {"type": "string", "enum": list(self.enum)}
        else:
            schema |= {"type": "string", "maxLength": self.max_length}
        return schema

    def validate(self, value: object) -> object:
        if self.kind == "integer":
            return self._integer(value)
        if not isinstance(value, str):
            raise ApiError("parameter_invalid", f"{self.name} must be a string", self.name)
        if self.kind == "currency":
            if value not in MINOR_UNIT_EXPONENT:
                raise ApiError(
                    "currency_invalid", f"{value[:8]!r} is not an ISO 4217 currency payplane accepts", self.name
                )
        elif self.kind == "enum":
            if value not in self.enum:
                raise ApiError("parameter_invalid", f"{self.name} must be one of {', '.join(self.enum)}", self.name)
        elif len(value) > self.max_length:
            raise ApiError("parameter_invalid", f"{self.name} must be at most {self.max_length} characters", self.name)
        return value

    def _integer(self, value: object) -> int:
        invalid = "amount_invalid" if self.amount else "parameter_invalid"
        if type(value) is not int:  # bool is an int, and floats never carry money
            raise ApiError(invalid, f"{self.name} must be an integer (minor units)", self.name)
        if self.minimum is not None and value < self.minimum:
            raise ApiError(invalid, f"{self.name} must be at least {self.minimum}", self.name)
        if self.maximum is not None and value > self.maximum:
            code = "amount_too_large" if self.amount else "parameter_invalid"
            raise ApiError(code, f"{self.name} must be at most {self.maximum}", self.name)
        return value


def _amount(name: str, description: str, required: bool = False) -> Field:
    return Field(name, "integer", description, required, minimum=1, maximum=AMOUNT_MAX_MINOR, amount=True)


CREATE_PAYMENT: Final = (
    _amount(
        "amount",
        "Amount in the currency's minor unit (cents for EUR, yen for JPY), within the rail's amount limits "
        "(PaymentRail spec.amountLimits): below them 400 amount_too_small, above them 400 amount_too_large.",
        required=True,
    ),
    Field("currency", "currency", "ISO 4217 code, upper case.", required=True),
    Field("source", "string", "The account debited (acct_...).", required=True, max_length=ID_MAX),
    Field("destination", "string", "The account credited (acct_...).", required=True, max_length=ID_MAX),
    Field(
        "capture_method",
        "enum",
        "automatic (default) or manual (authorize now, capture later).",
        enum=("automatic", "manual"),
    ),
    Field("description", "string", "Free text for your records."),
)
CAPTURE_PAYMENT: Final = (_amount("amount_to_capture", "Part of the authorized amount to capture (default: all)."),)
CANCEL_PAYMENT: Final = ()
REVIEW_PAYMENT: Final = ()
CREATE_REFUND: Final = (
    Field("payment", "string", "The payment to refund (pay_...).", required=True, max_length=ID_MAX),
    _amount("amount", "Amount to refund (default: everything still refundable)."),
)
CREATE_ACCOUNT: Final = (
    Field("currency", "currency", "ISO 4217 code, upper case.", required=True),
    Field(
        "type",
        "enum",
        "wallet (default; cannot go below zero) or external (a funding source).",
        enum=("wallet", "external"),
    ),
    Field("description", "string", "Free text for your records."),
)
LIST_QUERY: Final = (
    Field("limit", "integer", "Page size, 1 to 100 (default 10).", minimum=1, maximum=100),
    Field("starting_after", "string", "The last id of the previous page.", max_length=ID_MAX),
)
GET_PAYMENT_QUERY: Final = (
    Field(
        "wait_ms", "integer", "Wait up to this long (0..10000 ms) for the payment to settle.", minimum=0, maximum=10_000
    ),
)


def validate_body(body: object, fields: tuple[Field, ...]) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise ApiError("json_invalid", "the request body must be a JSON object")
    known = {f.name: f for f in fields}
    unknown = sorted(str(k) for k in body if k not in known)
    if unknown:
        raise ApiError("parameter_unknown", f"unknown parameter: {unknown[0][:64]}", unknown[0][:64])
    out: dict[str, Any] = {}
    for spec in fields:
        if spec.name not in body or body[spec.name] is None:
            if spec.required:
                raise ApiError("parameter_missing", f"missing required parameter: {spec.name}", spec.name)
            continue
        out[spec.name] = spec.validate(body[spec.name])
    return out


def validate_query(query: dict[str, str], fields: tuple[Field, ...]) -> dict[str, Any]:
    """Query strings carry text: integers are parsed before validation."""
    parsed: dict[str, object] = {}
    for name, value in query.items():
        spec = next((f for f in fields if f.name == name), None)
        if spec is not None and spec.kind == "integer":
            try:
                parsed[name] = int(value) if len(value) <= 20 else value
            except ValueError:
                parsed[name] = value
        else:
            parsed[name] = value
    return validate_body(parsed, fields)


# --- responses ------------------------------------------------------------------------------------

_TIMESTAMP = {"type": "integer", "description": "Unix time in seconds."}
_NULLABLE_STRING = {"type": ["string", "null"]}
RESPONSE_SCHEMAS: Final[dict[str, dict[str, Any]]] = {
    "Payment": {
        "type": "object",
        "required": [
            "id",
            "object",
            "amount",
            "currency",
            "status",
            "source",
            "destination",
            "capture_method",
            "amount_captured",
            "amount_refunded",
            "failure_code",
            "pending_action",
            "description",
            "created",
        ],
        "properties": {
            "id": {"type": "string", "pattern": "^pay_"},
            "object": {"const": "payment"},
            "amount": {"type": "integer", "minimum": 1},
            "currency": {"type": "string"},
            "status": {
                "enum": [
                    "processing",
                    "requires_review",
                    "authorized",
                    "succeeded",
                    "failed",
                    "canceled",
                    "partially_refunded",
                    "refunded",
                ]
            },
            "source": {"type": "string"},
            "destination": {"type": "string"},
            "capture_method": {"enum": ["automatic", "manual"]},
            "amount_captured": {"type": "integer", "minimum": 0},
            "amount_refunded": {"type": "integer", "minimum": 0},
            "failure_code": _NULLABLE_STRING,
            "pending_action": {"type": ["string", "null"], "enum": ["capture", "cancel", "approve", "reject", None]},
            "description": {"type": "string"},
            "created": _TIMESTAMP,
        },
    },
    "PaymentList": {
        "type": "object",
        "required": ["object", "data", "has_more", "url"],
        "properties": {
            "object": {"const": "list"},
            "data": {"type": "array", "items": {"$ref": "#/components/schemas/Payment"}},
            "has_more": {"type": "boolean"},
            "url": {"type": "string"},
        },
    },
    "Refund": {
        "type": "object",
        "required": ["id", "object", "payment", "amount", "status", "failure_code", "created"],
        "properties": {
            "id": {"type": "string", "pattern": "^re_"},
            "object": {"const": "refund"},
            "payment": {"type": "string"},
            "amount": {"type": "integer", "minimum": 1},
            "status": {"enum": ["pending", "succeeded", "failed"]},
            "failure_code": _NULLABLE_STRING,
            "created": _TIMESTAMP,
        },
    },
    "Account": {
        "type": "object",
        "required": ["id", "object", "currency", "type", "description", "created"],
        "properties": {
            "id": {"type": "string", "pattern": "^acct_"},
            "object": {"const": "account"},
            "currency": {"type": "string"},
            "type": {"enum": ["wallet", "external"]},
            "description": {"type": "string"},
            "created": _TIMESTAMP,
        },
    },
    "Balance": {
        "type": "object",
        "required": ["object", "account", "currency", "available", "posted", "pending_debits", "pending_credits"],
        "properties": {
            "object": {"const": "balance"},
            "account": {"type": "string"},
            "currency": {"type": "string"},
            "available": {"type": "integer"},
            "posted": {"type": "integer"},
            "pending_debits": {"type": "integer"},
            "pending_credits": {"type": "integer"},
        },
    },
    "Error": {
        "type": "object",
        "required": ["error"],
        "properties": {
            "error": {
                "type": "object",
                "required": ["type", "code", "message"],
                "properties": {
                    "type": {"enum": sorted({t.value for t, _, _ in CODES.values()})},
                    "code": {"enum": sorted(CODES)},
                    "message": {"type": "string"},
                    "param": {"type": "string"},
                },
            }
        },
    },
}


@dataclass(frozen=True)
class Route:
    method: str
    path: str  # OpenAPI style: /v1/payments/{id}
    operation_id: str
    summary: str
    response: str  # a RESPONSE_SCHEMAS name
    body: tuple[Field, ...] | None = None
    query: tuple[Field, ...] = ()
    status: int = 200
    errors: tuple[int, ...] = field(default=(400, 401, 404, 429, 503))


ROUTES: Final = (
    Route("post", "/v1/accounts", "createAccount", "Open an account", "Account", CREATE_ACCOUNT),
    Route("get", "/v1/accounts/{id}", "getAccount", "Retrieve an account", "Account"),
    Route("get", "/v1/accounts/{id}/balance", "getAccountBalance", "An account's ledger balance", "Balance"),
    Route(
        "post",
        "/v1/payments",
        "createPayment",
        "Create a payment",
        "Payment",
        CREATE_PAYMENT,
        errors=(400, 401, 404, 409, 422, 429, 503),
    ),
    Route("get", "/v1/payments", "listPayments", "List payments, newest first", "PaymentList", query=LIST_QUERY),
    Route("get", "/v1/payments/{id}", "getPayment", "Retrieve a payment", "Payment", query=GET_PAYMENT_QUERY),
    Route(
        "post",
        "/v1/payments/{id}/capture",
        "capturePayment",
        "Capture an authorized payment",
        "Payment",
        CAPTURE_PAYMENT,
        errors=(400, 401, 404, 409, 422, 429, 503),
    ),
    Route(
        "post",
        "/v1/payments/{id}/cancel",
        "cancelPayment",
        "Cancel an authorized payment",
        "Payment",
        CANCEL_PAYMENT,
        errors=(400, 401, 404, 409, 422, 429, 503),
    ),
    Route(
        "post",
        "/v1/refunds",
        "createRefund",
        "Refund a payment, fully or in part",
        "Refund",
        CREATE_REFUND,
        errors=(400, 401, 404, 409, 422, 429, 503),
    ),
    Route(
        "get",
        "/v1/reviews",
        "listReviews",
        "Admin: payments waiting for a review decision, oldest first",
        "PaymentList",
        query=LIST_QUERY,
        errors=(400, 401, 403, 404, 429, 503),
    ),
    Route(
        "post",
        "/v1/payments/{id}/approve",
        "approvePayment",
        "Admin: approve a payment in review (its hold is posted, or kept for a manual capture)",
        "Payment",
        REVIEW_PAYMENT,
        errors=(400, 401, 403, 404, 409, 422, 429, 503),
    ),
    Route(
        "post",
        "/v1/payments/{id}/reject",
        "rejectPayment",
        "Admin: reject a payment in review (its hold is voided; it ends canceled, review_rejected)",
        "Payment",
        REVIEW_PAYMENT,
        errors=(400, 401, 403, 404, 409, 422, 429, 503),
    ),
)


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _error_statuses(route: Route) -> tuple[int, ...]:
    """The route's own refusals, plus 413 for every request that has a body (``body_too_large``)."""
    return (*route.errors, 413) if route.body is not None else route.errors


def _operation(route: Route) -> dict[str, Any]:
    parameters: list[dict[str, Any]] = []
    if "{id}" in route.path:
        parameters.append(
            {"name": "id", "in": "path", "required": True, "schema": {"type": "string", "maxLength": ID_MAX}}
        )
    parameters += [{"name": f.name, "in": "query", "required": False, "schema": f.json_schema()} for f in route.query]
    if route.body is not None:
        parameters.append({"$ref": "#/components/parameters/IdempotencyKey"})
    operation: dict[str, Any] = {
        "operationId": route.operation_id,
        "summary": route.summary,
        "parameters": parameters,
        "responses": {
            str(route.status): {"description": "OK", "content": {"application/json": {"schema": _ref(route.response)}}},
            **{str(code): {"$ref": "#/components/responses/Error"} for code in _error_statuses(route)},
        },
    }
    if route.body is not None:
        schema = {
            "type": "object",
            "additionalProperties": False,
            "properties": {f.name: f.json_schema() for f in route.body},
        }
        required = [f.name for f in route.body if f.required]
        if required:
            schema["required"] = required
        operation["requestBody"] = {"required": bool(required), "content": {"application/json": {"schema": schema}}}
    return operation


def openapi_document() -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = {}
    for route in ROUTES:
        paths.setdefault(route.path, {})[route.method] = _operation(route)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "payplane API",
            "version": "v1",
            "description": "Payments over a double-entry ledger. Amounts are integer minor units; every POST "
            'needs an Idempotency-Key; errors are {"error": {type, code, message, param}}.',
        },
        "servers": [{"url": "/"}],
        "security": [{"apiKey": []}],
        "paths": paths,
        "components": {
            "schemas": RESPONSE_SCHEMAS,
            "securitySchemes": {"apiKey": {"type": "http", "scheme": "bearer", "description": "sk_..."}},
            "parameters": {
                "IdempotencyKey": {
                    "name": "Idempotency-Key",
                    "in": "header",
                    "required": True,
                    "description": "Unique per request (at most 255 printable ASCII characters); a retry with "
                    "the same key and body replays the first response, another body gets 422.",
                    "schema": {"type": "string", "minLength": 1, "maxLength": 255},
                }
            },
            "responses": {
                "Error": {"description": "An error", "content": {"application/json": {"schema": _ref("Error")}}}
            },
        },
    }


def render_openapi() -> str:
    """The document as committed to ``docs/openapi.json`` (``make openapi``)."""
    return json.dumps(openapi_document(), indent=2) + "\n"


if __name__ == "__main__":
    print(render_openapi(), end="")
