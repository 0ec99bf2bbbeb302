"""The SPIRE server's command line, over its admin socket: tokens, bundle, entries, agents.

The admin socket needs no credentials (SPIRE trusts local callers), so the CLI is the simplest way to
manage a local server. The operator will talk to the server API through generated stubs instead;
this wrapper serves ``payplane infra`` and the tests. Every call is bounded by a timeout.
"""

import json
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from payplane.devinfra.errors import InfraError

CLI_TIMEOUT_S = 30.0
HEALTHCHECK_TIMEOUT_S = 5.0


class SpireCliError(InfraError):
    def __init__(self, argv: Sequence[str], detail: str) -> None:
        super().__init__(f"`{' '.join(argv)}` failed: {detail.strip() or '(no output)'}")


@dataclass(frozen=True)
class RegistrationEntry:
    entry_id: str
    spiffe_id: str
    parent_id: str
    selectors: tuple[str, ...]  # "type:value"
    dns_names: tuple[str, ...]
    x509_svid_ttl_s: int


def _id_text(raw: dict[str, str]) -> str:
    return f"spiffe://{raw['trust_domain']}{raw.get('path', '')}"


def _entry_from_json(raw: dict[str, Any]) -> RegistrationEntry:
    return RegistrationEntry(
        entry_id=raw["id"],
        spiffe_id=_id_text(raw["spiffe_id"]),
        parent_id=_id_text(raw["parent_id"]),
        selectors=tuple(f"{s['type']}:{s['value']}" for s in raw.get("selectors", [])),
        dns_names=tuple(raw.get("dns_names", [])),
        x509_svid_ttl_s=int(raw.get("x509_svid_ttl", 0)),
    )


@dataclass(frozen=True)
class SpireServerCli:
    """``spire-server <command> -socketPath <admin socket>`` with JSON output parsed."""

    server_bin: Path
    admin_socket: Path
    timeout_s: float = CLI_TIMEOUT_S

    def _run(self, command: Sequence[str], *flags: str, timeout_s: float | None = None) -> str:
        argv = [str(self.server_bin), *command, "-socketPath", str(self.admin_socket), *flags]
        try:
            result = subprocess.run(
                argv, capture_output=True, text=True, check=False, timeout=timeout_s or self.timeout_s
            )
        except subprocess.TimeoutExpired as exc:
            raise SpireCliError(argv, f"no answer within {exc.timeout:.0f} s") from exc
        if result.returncode != 0:
            raise SpireCliError(argv, result.stderr or result.stdout)
        return result.stdout

    def _run_json(self, command: Sequence[str], *flags: str) -> dict[str, Any]:
        parsed: dict[str, Any] = json.loads(self._run(command, *flags, "-output", "json"))
        return parsed

    def healthy(self) -> bool:
        """The server's own health check (datastore, CA and API all answering)."""
        try:
            self._run(["healthcheck"], timeout_s=HEALTHCHECK_TIMEOUT_S)
        except SpireCliError:
            return False
        return True

    def bundle_pem(self) -> str:
        """The trust bundle (X.509 roots) an agent needs to trust the server on first contact."""
        return self._run(["bundle", "show"], "-format", "pem")

    def generate_join_token(self, alias_id: str, ttl_s: int) -> str:
        """A one-time token; the server also makes ``alias_id`` an alias of the agent that uses it."""
        token: str = self._run_json(["token", "generate"], "-spiffeID", alias_id, "-ttl", str(ttl_s))["value"]
        return token

    def agent_ids(self, attestation_type: str = "join_token") -> list[str]:
        listed = self._run_json(["agent", "list"], "-attestationType", attestation_type)
        return [_id_text(agent["id"]) for agent in listed.get("agents", [])]

    def evict_agent(self, agent_id: str) -> None:
        """Forget an agent; for join-token agents SPIRE also deletes the alias entry its token made."""
        self._run(["agent", "evict"], "-spiffeID", agent_id)

    def create_entry(
        self,
        *,
        spiffe_id: str,
        parent_id: str,
        selectors: Sequence[str],
        dns_names: Sequence[str] = (),
        x509_svid_ttl_s: int | None = None,
    ) -> RegistrationEntry:
        args = ["-spiffeID", spiffe_id, "-parentID", parent_id]
        args += [arg for selector in selectors for arg in ("-selector", selector)]
        args += [arg for name in dns_names for arg in ("-dns", name)]
        if x509_svid_ttl_s is not None:
            args += ["-x509SVIDTTL", str(x509_svid_ttl_s)]
        (result,) = self._run_json(["entry", "create"], *args)["results"]
        if result["status"]["code"] != 0:
            raise SpireCliError(args, result["status"].get("message", "entry not created"))
        return _entry_from_json(result["entry"])

    def entries(self, spiffe_id: str | None = None) -> list[RegistrationEntry]:
        flags = ["-spiffeID", spiffe_id] if spiffe_id else []
        return [_entry_from_json(raw) for raw in self._run_json(["entry", "show"], *flags).get("entries", [])]

    def delete_entry(self, entry_id: str) -> None:
        self._run(["entry", "delete"], "-entryID", entry_id)
