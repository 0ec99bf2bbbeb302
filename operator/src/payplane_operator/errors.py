"""The operator's own exceptions: plain classes, no kopf (``handlers.boundary`` maps them to kopf's)."""


class OperatorError(Exception):
    """Base of everything the operator raises on purpose."""


class ConfigError(OperatorError):
    """The operator's environment is wrong; it refuses to start and names the variable."""


class InvalidSpecError(OperatorError):
    """A custom resource's spec cannot be served as written (permanent until the spec changes).

    Admission (the CRD schema and its CEL rules) refuses almost everything; this covers objects stored
    under an older schema and rules that need more than one object to check.
    """

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.problem = problem
