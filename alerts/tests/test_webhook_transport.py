"""webhook_post resolves the URL's name once, checks those addresses and connects
to one of them (no second lookup a DNS rebinding could answer differently), with
the Host header, TLS SNI and the certificate check on the URL's name.

Receivers are real servers on loopback; only the resolver is ours (a name that
answers loopback first and an unroutable address afterwards, as a rebinding
attacker's DNS would)."""

import datetime as dt
import socket
import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from alerts.models import AlertRule, Kind
from alerts.services import alert_fire, webhook_create, webhook_post
from alerts.tests.test_alerts import NOW

NAME = "hooks.rebind.test"
UNROUTABLE = "192.0.2.1"  # TEST-NET-1: a connect there never succeeds


class Receiver:
    """A loopback HTTP(S) server that records the Host header and, for TLS, the
    SNI name the client sent."""

    def __init__(self, tls: ssl.SSLContext | None = None):
        self.hosts: list[str] = []
        self.sni: list[str | None] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's name
                self.rfile.read(int(self.headers["Content-Length"]))
                receiver.hosts.append(self.headers["Host"])
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        if tls is not None:
            tls.sni_callback = lambda sock, name, ctx: self.sni.append(name)
            self.server.socket = tls.wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def rebinding_dns(monkeypatch):
    """NAME resolves to loopback on the first lookup and to an unroutable address
    on every later one; other names resolve as usual. Records the lookups."""
    real = socket.getaddrinfo
    lookups = []

    def fake(host, port, *args, **kwargs):
        if host != NAME:
            return real(host, port, *args, **kwargs)
        lookups.append(host)
        address = "127.0.0.1" if len(lookups) == 1 else UNROUTABLE
        return real(address, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", fake)
    return lookups


@pytest.fixture
def loopback_is_public(monkeypatch, settings):
    """The guard on (no private hosts), with 127.0.0.1 standing for a public
    receiver: the rebinding answer (UNROUTABLE) is still refused."""
    from devices.services.brokers import addresses

    real = addresses._special_kind
    monkeypatch.setattr(
        addresses,
        "_special_kind",
        lambda address: "" if str(address) == "127.0.0.1" else real(address),
    )
    settings.BROKER_ALLOW_PRIVATE_HOSTS = False


@pytest.fixture
def alert(device_a):
    rule = AlertRule.objects.create(
        tenant=device_a.tenant, kind=Kind.FREEZE_RISK, threshold=4
    )
    return alert_fire(pool=device_a.pool, rule=rule, value=2.0, now=NOW).alert


def _webhook(alice, url):
    return webhook_create(membership=alice, url=url, secret="s" * 16)


def test_the_post_goes_to_the_address_that_was_checked(
    alice, alert, rebinding_dns, loopback_is_public
):
    receiver = Receiver()
    try:
        webhook = _webhook(alice, f"http://{NAME}:{receiver.port}/hook")
        rebinding_dns.clear()
        delivery = webhook_post(alert=alert, webhook=webhook, event="fired", attempt=1)
        assert (delivery.ok, delivery.status_code, delivery.error) == (True, 204, "")
        assert rebinding_dns == [NAME]  # one lookup, checked and used
        assert receiver.hosts == [f"{NAME}:{receiver.port}"]
    finally:
        receiver.stop()


def test_an_internal_answer_is_refused_and_nothing_is_sent(
    alice, alert, settings, rebinding_dns
):
    receiver = Receiver()
    try:
        settings.BROKER_ALLOW_PRIVATE_HOSTS = True  # saved while allowed
        webhook = _webhook(alice, f"http://{NAME}:{receiver.port}/hook")
        rebinding_dns.clear()
        settings.BROKER_ALLOW_PRIVATE_HOSTS = False
        delivery = webhook_post(alert=alert, webhook=webhook, event="fired", attempt=1)
        assert (delivery.ok, delivery.status, delivery.status_code) == (
            False,
            "failed",
            None,
        )
        assert "loopback" in delivery.error and "127.0.0.1" not in delivery.error
        assert rebinding_dns == [NAME] and receiver.hosts == []
    finally:
        receiver.stop()


def _certificate(tmp_path, name: str):
    """A self-signed certificate for `name` (its own CA): (cert file, key file)."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = tmp_path / f"{name}.pem", tmp_path / f"{name}.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_file, key_file


def _tls_receiver(tmp_path, name: str):
    cert_file, key_file = _certificate(tmp_path, name)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_file, key_file)
    return Receiver(tls=context), cert_file


def test_https_keeps_sni_and_the_certificate_check_on_the_name(
    alice, alert, settings, rebinding_dns, loopback_is_public, tmp_path
):
    receiver, cert_file = _tls_receiver(tmp_path, NAME)
    try:
        settings.WEBHOOK_CA_FILE = str(cert_file)
        webhook = _webhook(alice, f"https://{NAME}:{receiver.port}/hook")
        rebinding_dns.clear()
        delivery = webhook_post(alert=alert, webhook=webhook, event="fired", attempt=1)
        assert (delivery.ok, delivery.status_code, delivery.error) == (True, 204, "")
        assert rebinding_dns == [NAME]
        assert receiver.sni == [NAME]
        assert receiver.hosts == [f"{NAME}:{receiver.port}"]
    finally:
        receiver.stop()


def test_https_refuses_a_certificate_for_another_name(
    alice, alert, settings, rebinding_dns, loopback_is_public, tmp_path
):
    receiver, cert_file = _tls_receiver(tmp_path, "someone-else.test")
    try:
        settings.WEBHOOK_CA_FILE = str(cert_file)
        webhook = _webhook(alice, f"https://{NAME}:{receiver.port}/hook")
        rebinding_dns.clear()
        delivery = webhook_post(alert=alert, webhook=webhook, event="fired", attempt=1)
        assert (delivery.ok, delivery.status_code) == (False, None)
        assert "certificate" in delivery.error.lower()
        assert receiver.hosts == []
    finally:
        receiver.stop()
