"""Failures of the outside world, as the reconcilers see them."""


class ClientError(Exception):
    """A call to Kubernetes, Kafka or SPIRE failed.

    ``retriable`` says whether the same call may succeed later unchanged (a timeout, a 503, a broker
    that is not the controller yet); otherwise only a change of spec or of the world helps.
    """

    system = "external"

    def __init__(self, message: str, *, retriable: bool, code: str = "") -> None:
        super().__init__(message)
        self.retriable = retriable
        self.code = code


class KubeApiError(ClientError):
    system = "Kubernetes"

    def __init__(self, message: str, *, status: int, reason: str = "") -> None:
        retriable = status in {0, 408, 409, 429} or status >= 500
        super().__init__(message, retriable=retriable, code=str(status))
        self.status = status
        self.reason = reason


class KafkaAdminError(ClientError):
    system = "Kafka"


class SpireApiError(ClientError):
    system = "SPIRE"
