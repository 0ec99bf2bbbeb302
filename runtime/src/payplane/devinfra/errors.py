"""Typed failures of the local infrastructure; each message says what to do next."""


class InfraError(Exception):
    """Base class: something about the local infrastructure is not right."""


class PortInUseError(InfraError):
    def __init__(self, component: str, port: int) -> None:
        super().__init__(
            f"{component}: port 127.0.0.1:{port} is already in use by a process payplane did not start; "
            "stop it, or move payplane's ports with PAYPLANE_PORT_BASE=<n> (see docs/development.md)"
        )
        self.port = port


class BuildFailedError(InfraError):
    def __init__(self, what: str, log_path: str) -> None:
        super().__init__(f"building {what} failed; the full log is {log_path}")
        self.log_path = log_path


class NotHealthyError(InfraError):
    def __init__(self, component: str, timeout_s: float, log_path: str, log_tail: str) -> None:
        super().__init__(
            f"{component} did not become healthy within {timeout_s:.0f} s; log {log_path}, last lines:\n{log_tail}"
        )


class MissingToolError(InfraError):
    def __init__(self, tool: str, how_to_get: str) -> None:
        super().__init__(f"{tool} is not installed: {how_to_get}")
