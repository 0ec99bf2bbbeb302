"""Stable API error codes: one table shared by the payment worker (gRPC status) and the gateway (HTTP).

Every refusal a client can see is an ``ApiError`` with a ``type`` (Stripe's families), a stable
``code`` clients may branch on, a human ``message`` and, when one field is to blame, its ``param``.
The gRPC status and the HTTP status follow from the code, so the two edges can never disagree.
"""

from dataclasses import dataclass
from enum import StrEnum
from typing import Final


class ErrorType(StrEnum):
    INVALID_REQUEST = "invalid_request_error"
    IDEMPOTENCY = "idempotency_error"
    AUTHENTICATION = "authentication_error"
    PERMISSION = "permission_error"
    RATE_LIMIT = "rate_limit_error"
    API = "api_error"


# code → (type, HTTP status, gRPC status name)
CODES: Final[dict[str, tuple[ErrorType, int, str]]] = {
    "parameter_missing": (ErrorType.INVALID_REQUEST, 400, "INVALID_ARGUMENT"),
    "parameter_invalid": (ErrorType.INVALID_REQUEST, 400, "INVALID_ARGUMENT"),
    "parameter_unknown": (ErrorType.INVALID_REQUEST, 400, "INVALID_ARGUMENT"),
    "amount_invalid": (ErrorType.INVALID_REQUEST, 400, "INVALID_ARGUMENT"),
    "amount_too_large": (ErrorType.INVALID_REQUEST, 400, "INVALID_ARGUMENT"),
    "amount_too_small": (ErrorType.INVALID_REQUEST, 400, "INVALID_ARGUMENT"),
    "currency_invalid": (ErrorType.INVALID_REQUEST, 400, "INVALID_ARGUMENT"),
    "currency_mismatch": (ErrorType.INVALID_REQUEST, 400, "INVALID_ARGUMENT"),
    "json_invalid": (ErrorType.INVALID_REQUEST, 400, "INVALID_ARGUMENT"),
    "body_too_large": (ErrorType.INVALID_REQUEST, 413, "INVALID_ARGUMENT"),
    "idempotency_key_missing": (ErrorType.INVALID_REQUEST, 400, "INVALID_ARGUMENT"),
    "idempotency_key_invalid": (ErrorType.INVALID_REQUEST, 400, "INVALID_ARGUMENT"),
    "resource_missing": (ErrorType.INVALID_REQUEST, 404, "NOT_FOUND"),
    "route_missing": (ErrorType.INVALID_REQUEST, 404, "NOT_FOUND"),
    "method_not_allowed": (ErrorType.INVALID_REQUEST, 405, "UNIMPLEMENTED"),
    "payment_state_invalid": (ErrorType.INVALID_REQUEST, 409, "FAILED_PRECONDITION"),
    "payment_action_pending": (ErrorType.INVALID_REQUEST, 409, "FAILED_PRECONDITION"),
    "idempotency_key_in_use": (ErrorType.IDEMPOTENCY, 409, "ABORTED"),
    "idempotency_key_reused": (ErrorType.IDEMPOTENCY, 422, "INVALID_ARGUMENT"),
    "api_key_missing": (ErrorType.AUTHENTICATION, 401, "UNAUTHENTICATED"),
    "api_key_invalid": (ErrorType.AUTHENTICATION, 401, "UNAUTHENTICATED"),
    "admin_required": (ErrorType.PERMISSION, 403, "PERMISSION_DENIED"),
    "rate_limited": (ErrorType.RATE_LIMIT, 429, "RESOURCE_EXHAUSTED"),
    "service_unavailable": (ErrorType.API, 503, "UNAVAILABLE"),
    "internal_error": (ErrorType.API, 500, "INTERNAL"),
}


@dataclass(frozen=True)
class ApiError(Exception):
    code: str
    message: str
    param: str = ""

    def __post_init__(self) -> None:
        if self.code not in CODES:
            raise ValueError(f"unknown error code {self.code!r}")

    @property
    def type(self) -> ErrorType:
        return CODES[self.code][0]

    @property
    def http_status(self) -> int:
        return CODES[self.code][1]

    @property
    def grpc_status(self) -> str:
        return CODES[self.code][2]

    def to_dict(self) -> dict[str, str]:
        body = {"type": self.type.value, "code": self.code, "message": self.message}
        if self.param:
            body["param"] = self.param
        return body

    @classmethod
    def from_dict(cls, raw: dict[str, str]) -> "ApiError":
        code = raw.get("code", "internal_error")
        return cls(code if code in CODES else "internal_error", raw.get("message", ""), raw.get("param", ""))
