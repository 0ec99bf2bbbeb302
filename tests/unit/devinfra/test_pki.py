"""The local control plane's certificates: what they assert, who signed them, and that TLS accepts them."""

import datetime
import ipaddress
import socket
import ssl
import stat
import threading
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.hashes import SHA256
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from payplane.devinfra import pki

HANDSHAKE_TIMEOUT_S = 5.0


@pytest.fixture(scope="module")
def ca() -> pki.Issued:
    return pki.new_ca()


@pytest.fixture
def cluster(tmp_path: Path) -> pki.ClusterPki:
    cluster_pki, generated = pki.ensure_cluster_pki(tmp_path / "pki")
    assert generated
    return cluster_pki


def _load(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def _sans(cert: x509.Certificate) -> tuple[set[str], set[str]]:
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    dns = set(names.get_values_for_type(x509.DNSName))
    ips = {str(ip) for ip in names.get_values_for_type(x509.IPAddress)}
    return dns, ips


def _eku(cert: x509.Certificate) -> set[x509.ObjectIdentifier]:
    return set(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)


def test_ca_is_self_signed_and_may_only_sign_leaves(ca: pki.Issued) -> None:
    ca.cert.verify_directly_issued_by(ca.cert)
    constraints = ca.cert.extensions.get_extension_for_class(x509.BasicConstraints)
    assert constraints.critical
    assert constraints.value.ca
    assert constraints.value.path_length == 0
    usage = ca.cert.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.key_cert_sign
    assert usage.crl_sign


def test_apiserver_certificate_names_every_way_the_apiserver_is_reached(ca: pki.Issued) -> None:
    cert = pki.issue(ca, pki.LEAF_SPECS[pki.APISERVER]).cert

    dns, ips = _sans(cert)

    assert {"localhost", "kubernetes.default.svc"} <= dns
    assert {"127.0.0.1", "10.0.0.1"} <= ips
    assert _eku(cert) == {ExtendedKeyUsageOID.SERVER_AUTH}


def test_leaf_is_signed_by_the_ca_and_cannot_sign_certificates(ca: pki.Issued) -> None:
    cert = pki.issue(ca, pki.LEAF_SPECS[pki.APISERVER]).cert

    cert.verify_directly_issued_by(ca.cert)
    assert cert.issuer == ca.cert.subject
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    usage = cert.extensions.get_extension_for_class(x509.KeyUsage)
    assert usage.critical
    assert usage.value.digital_signature
    assert not usage.value.key_cert_sign


def test_leaf_is_not_accepted_as_signed_by_another_ca_of_the_same_name(ca: pki.Issued) -> None:
    cert = pki.issue(ca, pki.LEAF_SPECS[pki.ADMIN]).cert
    impostor = pki.new_ca()
    assert impostor.cert.subject == ca.cert.subject

    with pytest.raises(InvalidSignature):
        cert.verify_directly_issued_by(impostor.cert)


def test_admin_is_a_client_in_system_masters(ca: pki.Issued) -> None:
    cert = pki.issue(ca, pki.LEAF_SPECS[pki.ADMIN]).cert

    organizations = [attr.value for attr in cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)]
    assert organizations == ["system:masters"]
    assert _eku(cert) == {ExtendedKeyUsageOID.CLIENT_AUTH}


def test_control_plane_identities_match_bootstrap_rbac_users(ca: pki.Issued) -> None:
    for name, user in [
        (pki.CONTROLLER_MANAGER, "system:kube-controller-manager"),
        (pki.SCHEDULER, "system:kube-scheduler"),
    ]:
        cert = pki.issue(ca, pki.LEAF_SPECS[name]).cert
        common_names = [attr.value for attr in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
        assert common_names == [user]
        assert _eku(cert) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}


def test_front_proxy_client_is_signed_by_its_own_ca_only(cluster: pki.ClusterPki) -> None:
    cert = _load(cluster.cert(pki.FRONT_PROXY_CLIENT))

    cert.verify_directly_issued_by(_load(cluster.cert(pki.FRONT_PROXY_CA)))
    with pytest.raises(ValueError, match="does not match certificate issuer"):
        cert.verify_directly_issued_by(_load(cluster.ca_cert))
    assert _eku(cert) == {ExtendedKeyUsageOID.CLIENT_AUTH}


def test_certificate_without_a_usage_is_refused(ca: pki.Issued) -> None:
    with pytest.raises(ValueError, match="server_auth, client_auth"):
        pki.issue(ca, pki.LeafSpec("nobody"))


def test_validity_window_is_backdated_for_clock_skew(ca: pki.Issued) -> None:
    now = datetime.datetime(2030, 1, 1, tzinfo=datetime.UTC)

    cert = pki.issue(ca, pki.LEAF_SPECS[pki.ADMIN], now=now, validity_days=10).cert

    assert cert.not_valid_before_utc < now
    assert cert.not_valid_after_utc == now + datetime.timedelta(days=10)


def test_service_account_public_key_matches_the_signing_key(cluster: pki.ClusterPki) -> None:
    private_key = serialization.load_pem_private_key(cluster.service_account_key.read_bytes(), password=None)
    public_key = serialization.load_pem_public_key(cluster.service_account_public_key.read_bytes())
    assert isinstance(private_key, rsa.RSAPrivateKey)
    assert isinstance(public_key, rsa.RSAPublicKey)

    signature = private_key.sign(b"token", padding.PKCS1v15(), SHA256())

    public_key.verify(signature, b"token", padding.PKCS1v15(), SHA256())


def test_private_keys_are_owner_only(cluster: pki.ClusterPki) -> None:
    for name in [*pki.CERTIFICATE_AUTHORITIES, *pki.LEAF_SPECS]:
        assert stat.S_IMODE(cluster.key(name).stat().st_mode) == 0o600
    assert stat.S_IMODE(cluster.service_account_key.stat().st_mode) == 0o600


def test_existing_pki_is_reused(cluster: pki.ClusterPki) -> None:
    before = {path: path.read_bytes() for path in cluster.all_files()}

    _, generated = pki.ensure_cluster_pki(cluster.directory)

    assert not generated
    assert {path: path.read_bytes() for path in cluster.all_files()} == before


def test_pki_is_regenerated_when_a_file_is_missing(cluster: pki.ClusterPki) -> None:
    old_ca = cluster.ca_cert.read_bytes()
    cluster.key(pki.SCHEDULER).unlink()

    _, generated = pki.ensure_cluster_pki(cluster.directory)

    assert generated
    assert cluster.ca_cert.read_bytes() != old_ca
    _load(cluster.cert(pki.SCHEDULER)).verify_directly_issued_by(_load(cluster.ca_cert))


def test_pki_near_expiry_is_not_current(cluster: pki.ClusterPki) -> None:
    expiry = _load(cluster.ca_cert).not_valid_after_utc

    assert cluster.is_current(now=expiry - datetime.timedelta(days=pki.RENEW_BEFORE_DAYS + 1))
    assert not cluster.is_current(now=expiry - datetime.timedelta(days=pki.RENEW_BEFORE_DAYS - 1))


def _serve_once(server: ssl.SSLContext, sock: socket.socket, errors: list[BaseException]) -> None:
    try:
        with server.wrap_socket(sock, server_side=True) as tls:
            tls.sendall(b"hello")
    except (OSError, ssl.SSLError) as exc:
        errors.append(exc)


def test_mutual_tls_handshake_with_the_issued_files(cluster: pki.ClusterPki) -> None:
    """OpenSSL (via ``ssl``) accepts the chain both ways, and the hostname 127.0.0.1 matches."""
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(cluster.cert(pki.APISERVER), cluster.key(pki.APISERVER))
    server.load_verify_locations(cluster.ca_cert)
    server.verify_mode = ssl.CERT_REQUIRED
    client = ssl.create_default_context(cafile=str(cluster.ca_cert))
    client.load_cert_chain(cluster.cert(pki.ADMIN), cluster.key(pki.ADMIN))
    server_sock, client_sock = socket.socketpair()
    server_sock.settimeout(HANDSHAKE_TIMEOUT_S)
    client_sock.settimeout(HANDSHAKE_TIMEOUT_S)
    errors: list[BaseException] = []
    thread = threading.Thread(target=_serve_once, args=(server, server_sock, errors))
    thread.start()

    with client.wrap_socket(client_sock, server_hostname=str(ipaddress.ip_address("127.0.0.1"))) as tls:
        assert tls.recv(5) == b"hello"
    thread.join(HANDSHAKE_TIMEOUT_S)

    assert not thread.is_alive()
    assert errors == []
