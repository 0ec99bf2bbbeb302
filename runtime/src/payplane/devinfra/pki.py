"""Certificates for the local Kubernetes control plane, made in-process with ``cryptography``.

Why in-process: no dependency on an ``openssl`` binary or its version-specific flags, and the unit tests
can check exactly what was issued. One throwaway CA signs every certificate: the apiserver's serving
certificate, one certificate per control-plane identity (admin, controller-manager, scheduler; each used
both as a client of the apiserver and, for the latter two, to serve their health port), plus a separate
RSA key pair that signs ServiceAccount tokens. A second CA signs only the front-proxy client certificate
the apiserver presents to aggregated API servers (kept apart, as upstream advises, so no ordinary client
certificate can assert identities through request headers). Everything is generated once and reused while valid, so
tokens, kubeconfigs and trust stores handed out earlier keep working across ``infra up`` runs.
"""

import datetime
import ipaddress
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CERT_VALIDITY_DAYS = 365
# Regenerate everything when any certificate has less than this left, so a long-lived dev machine
# never starts a control plane whose certificates expire mid-session.
RENEW_BEFORE_DAYS = 30
# Clock skew between "now" here and the processes that verify the certificate.
BACKDATE_MINUTES = 5
SERVICE_ACCOUNT_KEY_BITS = 2048  # RSA, so tokens are RS256: every JWT library verifies those

CA = "ca"
FRONT_PROXY_CA = "front-proxy-ca"
CERTIFICATE_AUTHORITIES = (CA, FRONT_PROXY_CA)
ADMIN = "admin"
APISERVER = "apiserver"
CONTROLLER_MANAGER = "kube-controller-manager"
SCHEDULER = "kube-scheduler"
FRONT_PROXY_CLIENT = "front-proxy-client"

# The apiserver is reached on loopback by tools and, in-cluster, by the service's first ClusterIP
# (10.0.0.1 for --service-cluster-ip-range=10.0.0.0/24) under the well-known service DNS names.
APISERVER_DNS_NAMES = (
    "localhost",
    "kubernetes",
    "kubernetes.default",
    "kubernetes.default.svc",
    "kubernetes.default.svc.cluster.local",
)
APISERVER_IPS = ("127.0.0.1", "10.0.0.1")
LOOPBACK_DNS_NAMES = ("localhost",)
LOOPBACK_IPS = ("127.0.0.1",)

PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey


@dataclass(frozen=True)
class LeafSpec:
    """What one issued certificate says: who it is, where it may serve, how it may be used."""

    common_name: str
    organizations: Sequence[str] = ()
    dns_names: Sequence[str] = ()
    ip_addresses: Sequence[str] = ()
    server_auth: bool = False
    client_auth: bool = False
    issuer: str = CA


# Kubernetes maps a client certificate's CN to the user and each O to a group. The controller-manager
# and scheduler identities are the ones the apiserver's bootstrap RBAC roles are bound to.
LEAF_SPECS: dict[str, LeafSpec] = {
    APISERVER: LeafSpec(
        "kube-apiserver",
        dns_names=APISERVER_DNS_NAMES,
        ip_addresses=APISERVER_IPS,
        server_auth=True,
    ),
    ADMIN: LeafSpec("payplane-admin", organizations=("system:masters",), client_auth=True),
    CONTROLLER_MANAGER: LeafSpec(
        "system:kube-controller-manager",
        dns_names=LOOPBACK_DNS_NAMES,
        ip_addresses=LOOPBACK_IPS,
        server_auth=True,
        client_auth=True,
    ),
    SCHEDULER: LeafSpec(
        "system:kube-scheduler",
        dns_names=LOOPBACK_DNS_NAMES,
        ip_addresses=LOOPBACK_IPS,
        server_auth=True,
        client_auth=True,
    ),
    FRONT_PROXY_CLIENT: LeafSpec(FRONT_PROXY_CLIENT, client_auth=True, issuer=FRONT_PROXY_CA),
}


@dataclass(frozen=True)
class Issued:
    """A certificate together with its private key."""

    cert: x509.Certificate
    key: PrivateKey


def _utc_now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _new_tls_key() -> ec.EllipticCurvePrivateKey:
    """P-256: accepted by Go's TLS stack and Python's ssl, and generated in microseconds (RSA: ~100 ms)."""
    return ec.generate_private_key(ec.SECP256R1())


def _validity(now: datetime.datetime, validity_days: int) -> tuple[datetime.datetime, datetime.datetime]:
    not_before = now - datetime.timedelta(minutes=BACKDATE_MINUTES)
    return not_before, now + datetime.timedelta(days=validity_days)


def new_ca(
    common_name: str = "payplane-local-ca",
    *,
    now: datetime.datetime | None = None,
    validity_days: int = CERT_VALIDITY_DAYS,
) -> Issued:
    """A self-signed CA that may sign leaf certificates only (path length 0)."""
    key = _new_tls_key()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    not_before, not_after = _validity(now or _utc_now(), validity_days)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(ca=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return Issued(cert, key)


def _key_usage(*, ca: bool) -> x509.KeyUsage:
    """ECDSA keys only sign (no key encipherment); only the CA signs certificates and CRLs."""
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=ca,
        crl_sign=ca,
        encipher_only=False,
        decipher_only=False,
    )


def _subject(spec: LeafSpec) -> x509.Name:
    attributes = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, org) for org in spec.organizations]
    attributes.append(x509.NameAttribute(NameOID.COMMON_NAME, spec.common_name))
    return x509.Name(attributes)


def _subject_alt_names(spec: LeafSpec) -> x509.SubjectAlternativeName:
    names: list[x509.GeneralName] = [x509.DNSName(dns) for dns in spec.dns_names]
    names += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in spec.ip_addresses]
    return x509.SubjectAlternativeName(names)


def _extended_key_usage(spec: LeafSpec) -> x509.ExtendedKeyUsage:
    usages = []
    if spec.server_auth:
        usages.append(ExtendedKeyUsageOID.SERVER_AUTH)
    if spec.client_auth:
        usages.append(ExtendedKeyUsageOID.CLIENT_AUTH)
    return x509.ExtendedKeyUsage(usages)


def issue(
    ca: Issued, spec: LeafSpec, *, now: datetime.datetime | None = None, validity_days: int = CERT_VALIDITY_DAYS
) -> Issued:
    """A leaf certificate for ``spec``, signed by ``ca``."""
    if not (spec.server_auth or spec.client_auth):
        raise ValueError(f"{spec.common_name}: a certificate needs server_auth, client_auth or both")
    key = _new_tls_key()
    not_before, not_after = _validity(now or _utc_now(), validity_days)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_subject(spec))
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(ca=False), critical=True)
        .add_extension(_extended_key_usage(spec), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()),
            critical=False,
        )
    )
    if spec.dns_names or spec.ip_addresses:
        builder = builder.add_extension(_subject_alt_names(spec), critical=False)
    return Issued(builder.sign(ca.key, hashes.SHA256()), key)


def new_service_account_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=SERVICE_ACCOUNT_KEY_BITS)


def cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def key_pem(key: PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def public_key_pem(key: rsa.RSAPrivateKey) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.PEM,
        serialization.PublicFormat.SubjectPublicKeyInfo,
    )


def _write_atomically(path: Path, content: bytes, mode: int) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "wb") as handle:
        handle.write(content)
    tmp.replace(path)


@dataclass(frozen=True)
class ClusterPki:
    """Where the control plane's certificates and keys live (``<name>.crt`` / ``<name>.key``)."""

    directory: Path

    def cert(self, name: str) -> Path:
        return self.directory / f"{name}.crt"

    def key(self, name: str) -> Path:
        return self.directory / f"{name}.key"

    @property
    def ca_cert(self) -> Path:
        return self.cert(CA)

    @property
    def ca_key(self) -> Path:
        return self.key(CA)

    @property
    def service_account_key(self) -> Path:
        return self.directory / "sa.key"

    @property
    def service_account_public_key(self) -> Path:
        return self.directory / "sa.pub"

    def all_files(self) -> list[Path]:
        names = [*CERTIFICATE_AUTHORITIES, *LEAF_SPECS]
        return [
            *(self.cert(name) for name in names),
            *(self.key(name) for name in names),
            self.service_account_key,
            self.service_account_public_key,
        ]

    def is_current(self, now: datetime.datetime | None = None) -> bool:
        """All files present and no certificate within ``RENEW_BEFORE_DAYS`` of expiry."""
        if not all(path.is_file() for path in self.all_files()):
            return False
        renew_after = (now or _utc_now()) + datetime.timedelta(days=RENEW_BEFORE_DAYS)
        for name in [*CERTIFICATE_AUTHORITIES, *LEAF_SPECS]:
            cert = x509.load_pem_x509_certificate(self.cert(name).read_bytes())
            if cert.not_valid_after_utc <= renew_after:
                return False
        return True

    def generate(self) -> None:
        """Write fresh CAs, every leaf in ``LEAF_SPECS`` and a ServiceAccount key pair."""
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        authorities = {name: new_ca(f"payplane-local-{name}") for name in CERTIFICATE_AUTHORITIES}
        for name, authority in authorities.items():
            self._write(name, authority)
        for name, spec in LEAF_SPECS.items():
            self._write(name, issue(authorities[spec.issuer], spec))
        sa_key = new_service_account_key()
        _write_atomically(self.service_account_key, key_pem(sa_key), 0o600)
        _write_atomically(self.service_account_public_key, public_key_pem(sa_key), 0o644)

    def _write(self, name: str, issued: Issued) -> None:
        _write_atomically(self.key(name), key_pem(issued.key), 0o600)
        _write_atomically(self.cert(name), cert_pem(issued.cert), 0o644)


def ensure_cluster_pki(directory: Path) -> tuple[ClusterPki, bool]:
    """The PKI in ``directory``, generated only if missing or near expiry; returns (pki, generated)."""
    pki = ClusterPki(directory)
    if pki.is_current():
        return pki, False
    pki.generate()
    return pki, True
