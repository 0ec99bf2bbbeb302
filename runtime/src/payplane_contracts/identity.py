"""SPIFFE identities of payplane's workloads, as both the operator and the runtime spell them.

The operator registers one SPIRE entry per workload with the ID built here, and every gRPC server
authorizes its callers against IDs built here; one function on both sides means the two can never
drift apart. IDs follow the Kubernetes convention ``spiffe://<trust-domain>/ns/<namespace>/sa/<sa>``,
so the same ID names a workload whether SPIRE attests it in a cluster (k8s selectors) or locally
(unix selectors, see ``payplane.devinfra.local_identity``).

Validation follows the SPIFFE ID specification (spiffe/spiffe standards/SPIFFE-ID.md): lowercase
trust domain of ``[a-z0-9.-_]``, path segments of ``[a-zA-Z0-9.-_]``, no empty, ``.`` or ``..``
segments, no trailing slash, no query, fragment, port or user info, at most 2048 bytes.
"""

import re
import zlib
from dataclasses import dataclass
from enum import StrEnum
from typing import Final

SCHEME: Final = "spiffe://"
MAX_ID_LENGTH: Final = 2048
MAX_DNS_LABEL_LENGTH: Final = 63
MAX_DNS_SUBDOMAIN_LENGTH: Final = 253
SYSTEM_NAMESPACE: Final = "payplane-system"

_TRUST_DOMAIN_RE: Final = re.compile(r"[a-z0-9._-]+")
_PATH_SEGMENT_RE: Final = re.compile(r"[a-zA-Z0-9._-]+")
_DNS_LABEL_RE: Final = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_DNS_SUBDOMAIN_RE: Final = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")


class InvalidSpiffeIdError(ValueError):
    """A string that is not a valid SPIFFE ID, or not one of payplane's workload IDs."""


class WorkloadRole(StrEnum):
    """Every kind of workload that holds an SVID."""

    GATEWAY = "gateway"
    PAYMENT_WORKER = "payment-worker"
    LEDGER_WRITER = "ledger-writer"
    OPERATOR = "operator"
    ADMIN_CLI = "admin-cli"


# Roles the operator runs once per cluster; the others run once per PaymentRail / LedgerShard.
SINGLETON_ROLES: Final = frozenset({WorkloadRole.OPERATOR, WorkloadRole.ADMIN_CLI})


@dataclass(frozen=True, order=True)
class SpiffeId:
    """A validated SPIFFE ID; ``str()`` gives the canonical ``spiffe://`` form."""

    trust_domain: str
    path: str  # "" or "/seg/seg..."

    def __post_init__(self) -> None:
        _check_trust_domain(self.trust_domain)
        _check_path(self.path)
        if len(str(self)) > MAX_ID_LENGTH:
            raise InvalidSpiffeIdError(f"SPIFFE ID longer than {MAX_ID_LENGTH} bytes")

    def __str__(self) -> str:
        return f"{SCHEME}{self.trust_domain}{self.path}"

    @property
    def segments(self) -> tuple[str, ...]:
        return tuple(self.path.split("/")[1:]) if self.path else ()

    @classmethod
    def parse(cls, text: str) -> "SpiffeId":
        """Parse and validate; raises InvalidSpiffeIdError naming what is wrong."""
        if not text.startswith(SCHEME):
            raise InvalidSpiffeIdError(f"{text!r}: a SPIFFE ID starts with {SCHEME!r} (lowercase)")
        rest = text[len(SCHEME) :]
        if any(char in rest for char in "?#"):
            raise InvalidSpiffeIdError(f"{text!r}: a SPIFFE ID has no query or fragment")
        trust_domain, slash, path = rest.partition("/")
        try:
            return cls(trust_domain, slash + path)
        except InvalidSpiffeIdError as exc:
            raise InvalidSpiffeIdError(f"{text!r}: {exc}") from None


@dataclass(frozen=True)
class WorkloadIdentity:
    """Who a workload is in Kubernetes terms; its SPIFFE ID follows from it and a trust domain."""

    role: WorkloadRole
    namespace: str
    service_account: str

    def __post_init__(self) -> None:
        _check_dns_label("namespace", self.namespace)
        _check_dns_subdomain("service account", self.service_account)

    def spiffe_id(self, trust_domain: str) -> SpiffeId:
        return SpiffeId(trust_domain, f"/ns/{self.namespace}/sa/{self.service_account}")


def service_account_name(role: WorkloadRole, owner: str | None = None) -> str:
    """``<owner>-<role>`` for per-rail / per-shard workloads, ``payplane-<role>`` for singletons.

    ``owner`` is the PaymentRail or LedgerShard name; every workload of one owner and role shares
    one service account, hence one SPIFFE ID.
    """
    if role in SINGLETON_ROLES:
        if owner is not None:
            raise ValueError(f"{role} is a cluster singleton and has no owner")
        return f"payplane-{role}"
    if owner is None:
        raise ValueError(f"{role} workloads belong to a PaymentRail or LedgerShard: owner is required")
    return f"{owner}-{role}"


def workload_identity(role: WorkloadRole, namespace: str | None = None, owner: str | None = None) -> WorkloadIdentity:
    """The identity of one workload; singletons live in ``payplane-system`` unless told otherwise."""
    if namespace is None:
        if role not in SINGLETON_ROLES:
            raise ValueError(f"{role} workloads live in their resource's namespace: namespace is required")
        namespace = SYSTEM_NAMESPACE
    return WorkloadIdentity(role, namespace, service_account_name(role, owner))


def workload_spiffe_id(
    trust_domain: str, role: WorkloadRole, namespace: str | None = None, owner: str | None = None
) -> SpiffeId:
    """Shorthand for ``workload_identity(...).spiffe_id(trust_domain)``."""
    return workload_identity(role, namespace, owner).spiffe_id(trust_domain)


def parse_workload_id(text: str, trust_domain: str) -> WorkloadIdentity:
    """The workload behind a SPIFFE ID of ``trust_domain``; raises InvalidSpiffeIdError otherwise."""
    spiffe_id = SpiffeId.parse(text)
    if spiffe_id.trust_domain != trust_domain:
        raise InvalidSpiffeIdError(f"{text!r}: trust domain is not {trust_domain!r}")
    segments = spiffe_id.segments
    if len(segments) != 4 or segments[0] != "ns" or segments[2] != "sa":
        raise InvalidSpiffeIdError(f"{text!r}: not of the form /ns/<namespace>/sa/<service-account>")
    namespace, service_account = segments[1], segments[3]
    role = _role_of_service_account(service_account)
    if role is None:
        raise InvalidSpiffeIdError(f"{text!r}: service account names no payplane workload role")
    try:
        return WorkloadIdentity(role, namespace, service_account)
    except ValueError as exc:
        raise InvalidSpiffeIdError(f"{text!r}: {exc}") from None


def _role_of_service_account(service_account: str) -> WorkloadRole | None:
    # longest role name first, so "x-ledger-writer" never matches a shorter role by accident
    for role in sorted(WorkloadRole, key=len, reverse=True):
        if service_account == f"payplane-{role}" and role in SINGLETON_ROLES:
            return role
        if service_account.endswith(f"-{role}") and role not in SINGLETON_ROLES:
            return role
    return None


def _check_trust_domain(trust_domain: str) -> None:
    if not trust_domain:
        raise InvalidSpiffeIdError("trust domain is empty")
    if not _TRUST_DOMAIN_RE.fullmatch(trust_domain):
        raise InvalidSpiffeIdError(
            f"trust domain {trust_domain!r} may only hold lowercase letters, digits, '.', '-' and '_'"
        )


def _check_path(path: str) -> None:
    if not path:
        return
    if not path.startswith("/"):
        raise InvalidSpiffeIdError(f"path {path!r} must start with '/'")
    for segment in path.split("/")[1:]:
        if not segment:
            raise InvalidSpiffeIdError(f"path {path!r} has an empty segment or a trailing '/'")
        if segment in {".", ".."}:
            raise InvalidSpiffeIdError(f"path {path!r} has a '.' or '..' segment")
        if not _PATH_SEGMENT_RE.fullmatch(segment):
            raise InvalidSpiffeIdError(f"path segment {segment!r} may only hold letters, digits, '.', '-' and '_'")


def _check_dns_label(what: str, value: str) -> None:
    if len(value) > MAX_DNS_LABEL_LENGTH or not _DNS_LABEL_RE.fullmatch(value):
        raise ValueError(
            f"{what} {value!r} is not a DNS-1123 label (lowercase alphanumerics and '-', "
            f"at most {MAX_DNS_LABEL_LENGTH})"
        )


def _check_dns_subdomain(what: str, value: str) -> None:
    if len(value) > MAX_DNS_SUBDOMAIN_LENGTH or not _DNS_SUBDOMAIN_RE.fullmatch(value):
        raise ValueError(f"{what} {value!r} is not a DNS-1123 subdomain")


# -- local mode ----------------------------------------------------------------------------------
# Locally every workload runs as root, so SPIRE's unix attestor tells them apart by the primary gid
# each is started with (see payplane.devinfra.local_identity). The operator registers the same gid
# in the workload's entry, so both sides derive it here. Far above the gids Debian hands out.
LOCAL_GID_BASE: Final = 3_000_000
LOCAL_GID_RANGE: Final = 1_000_000


def local_gid(spiffe_id: str) -> int:
    """A stable gid for one SPIFFE ID (CRC-32 of it, folded into payplane's range)."""
    return LOCAL_GID_BASE + zlib.crc32(spiffe_id.encode()) % LOCAL_GID_RANGE
