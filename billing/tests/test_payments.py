"""The payment provider: Stripe's webhook (signature checked by stripe's own
Webhook.construct_event, each event applied once, a replay changes nothing) with
recorded event payloads signed here with a test secret, and the outgoing calls
(customer, payment intent) made by the real stripe library against a loopback fake
of Stripe's HTTP API. Nothing leaves the machine: STRIPE_API_BASE points at the
fake, or at a closed loopback port where no call is expected."""

import hashlib
import hmac
import json
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from django.test import Client

from audit.models import AuditEvent
from billing import payments
from billing.models import BillingCustomer, Invoice, Payment, ProviderEvent
from billing.tests.test_invoices import billed_a, issue, pro  # noqa: F401

pytestmark = pytest.mark.django_db

FIXTURES = Path(__file__).parent / "fixtures" / "stripe"
SECRET = "whsec_test_5eCr3tOnlyKnownToThisTest"
URL = "/billing/webhooks/stripe/"


@pytest.fixture(autouse=True)
def stripe_settings(settings):
    settings.STRIPE_API_KEY = "sk_test_poolsaas_fake"
    settings.STRIPE_WEBHOOK_SECRET = SECRET
    # Port 9 (discard) on loopback: any outgoing call fails loudly.
    settings.STRIPE_API_BASE = "http://127.0.0.1:9"
    return settings


def payload(name: str, **values) -> bytes:
    text = (FIXTURES / f"{name}.json").read_text()
    for key, value in values.items():
        text = text.replace("{{" + key + "}}", str(value))
    return text.encode()


def sign(body: bytes, *, secret: str = SECRET, at: int | None = None) -> str:
    """The Stripe-Signature header, made the way Stripe makes it."""
    at = int(time.time()) if at is None else at
    mac = hmac.new(secret.encode(), f"{at}.".encode() + body, hashlib.sha256)
    return f"t={at},v1={mac.hexdigest()}"


def post(body: bytes, signature: str | None):
    client = Client(enforce_csrf_checks=True)  # no CSRF token: a webhook has none
    headers = {"HTTP_STRIPE_SIGNATURE": signature} if signature else {}
    return client.post(URL, body, content_type="application/json", **headers)


@pytest.fixture
def invoice(billed_a):  # noqa: F811
    return issue(billed_a)


def test_payment_succeeded_marks_the_invoice_paid_once_and_replay_changes_nothing(
    invoice,
):
    body = payload("payment_intent.succeeded", invoice=invoice.code.hex)
    first = post(body, sign(body))
    assert first.status_code == 200, first.content
    assert first.json() == {"received": True, "duplicate": False}
    invoice.refresh_from_db()
    assert invoice.status == Invoice.Status.PAID
    assert invoice.amount_paid_cents == 1900
    payment = Payment.objects.get()
    assert (payment.provider_ref, payment.amount_cents, payment.currency) == (
        "pi_3QpR7sLkdIwHu7ix0ZK9mD4e",
        1900,
        "EUR",
    )
    before = (
        list(Payment.objects.values()),
        list(ProviderEvent.objects.values()),
        Invoice.objects.values().get(pk=invoice.pk),
        AuditEvent.objects.count(),
    )
    # Stripe retries deliveries: the same event again, freshly signed, twice.
    for _ in range(2):
        again = post(body, sign(body))
        assert again.status_code == 200
        assert again.json() == {"received": True, "duplicate": True}
    after = (
        list(Payment.objects.values()),
        list(ProviderEvent.objects.values()),
        Invoice.objects.values().get(pk=invoice.pk),
        AuditEvent.objects.count(),
    )
    assert after == before
    event = ProviderEvent.objects.get()
    assert event.invoice == invoice and event.outcome == "paid 1900 EUR"
    assert AuditEvent.objects.filter(action="invoice.paid").count() == 1


def test_a_second_event_for_a_part_payment_adds_up(invoice):
    body = payload("payment_intent.succeeded", invoice=invoice.code.hex)
    part = json.loads(body)
    part["data"]["object"]["amount_received"] = 900
    part_body = json.dumps(part).encode()
    assert post(part_body, sign(part_body)).status_code == 200
    invoice.refresh_from_db()
    assert (invoice.status, invoice.amount_paid_cents) == ("issued", 900)
    rest = json.loads(body)
    rest["id"] = "evt_second_part_payment"
    rest["data"]["object"]["amount_received"] = 1000
    rest_body = json.dumps(rest).encode()
    assert post(rest_body, sign(rest_body)).json()["duplicate"] is False
    invoice.refresh_from_db()
    assert (invoice.status, invoice.amount_paid_cents) == ("paid", 1900)


@pytest.mark.parametrize(
    "signature",
    [
        None,
        "t=1,v1=00",
        "garbage",
        "wrong-secret",
        "too-old",
    ],
)
def test_badly_signed_events_are_refused_and_change_nothing(invoice, signature):
    body = payload("payment_intent.succeeded", invoice=invoice.code.hex)
    if signature == "wrong-secret":
        signature = sign(body, secret="whsec_someone_else")
    elif signature == "too-old":
        signature = sign(body, at=int(time.time()) - 3600)  # past the 5 min window
    response = post(body, signature)
    assert response.status_code == 400
    assert "Stripe-Signature" in response.json()["error"]
    assert not ProviderEvent.objects.exists() and not Payment.objects.exists()
    invoice.refresh_from_db()
    assert invoice.status == "issued"


def test_tampered_body_is_refused(invoice):
    body = payload("payment_intent.succeeded", invoice=invoice.code.hex)
    signature = sign(body)
    tampered = body.replace(b'"amount_received": 1900', b'"amount_received": 99900')
    assert post(tampered, signature).status_code == 400
    assert not Payment.objects.exists()


def test_failed_payment_and_unknown_events_are_recorded_once(invoice):
    failed = payload("payment_intent.payment_failed", invoice=invoice.code.hex)
    assert post(failed, sign(failed)).status_code == 200
    assert post(failed, sign(failed)).json()["duplicate"] is True
    other = payload("customer.created")
    assert post(other, sign(other)).status_code == 200
    outcomes = dict(ProviderEvent.objects.values_list("type", "outcome"))
    assert outcomes == {
        "payment_intent.payment_failed": "payment failed: Your card has "
        "insufficient funds.",
        "customer.created": "ignored: not an event poolsaas acts on",
    }
    assert AuditEvent.objects.filter(action="invoice.payment_failed").count() == 1
    invoice.refresh_from_db()
    assert invoice.status == "issued" and not Payment.objects.exists()


def test_payment_for_an_unknown_invoice_or_in_another_currency_pays_nothing(invoice):
    import uuid

    stray = payload("payment_intent.succeeded", invoice=uuid.uuid4().hex)
    assert post(stray, sign(stray)).status_code == 200
    dollars = json.loads(payload("payment_intent.succeeded", invoice=invoice.code.hex))
    dollars["id"] = "evt_in_dollars"
    dollars["data"]["object"]["currency"] = "usd"
    body = json.dumps(dollars).encode()
    assert post(body, sign(body)).status_code == 200
    assert not Payment.objects.exists()
    assert set(ProviderEvent.objects.values_list("outcome", flat=True)) == {
        "ignored: no such invoice",
        "ignored: paid in USD, due in EUR",
    }


def test_webhook_answers_404_when_payments_are_not_set_up(invoice, settings):
    settings.STRIPE_WEBHOOK_SECRET = ""
    body = payload("payment_intent.succeeded", invoice=invoice.code.hex)
    assert post(body, sign(body)).status_code == 404
    assert Client().get(URL).status_code == 405
    assert not ProviderEvent.objects.exists()


# --- outgoing calls, against a loopback fake of Stripe's HTTP API ---


class FakeStripe(BaseHTTPRequestHandler):
    """Answers POST /v1/customers and /v1/payment_intents with recorded objects and
    keeps what it was sent."""

    routes = {
        "/v1/customers": "api_customer",
        "/v1/payment_intents": "api_payment_intent",
    }

    def do_POST(self):  # noqa: N802 - http.server's name
        length = int(self.headers.get("Content-Length") or 0)
        form = urllib.parse.parse_qs(self.rfile.read(length).decode())
        self.server.calls.append((self.path, dict(self.headers), form))
        name = self.routes.get(self.path)
        if name is None:
            body, status = b'{"error": {"message": "No such route"}}', 404
        else:
            values = {
                "invoice": form.get("metadata[invoice]", [""])[0],
                "tenant": form.get("metadata[tenant]", [""])[0],
            }
            body, status = payload(name, **values), 200
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Request-Id", "req_fake")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def fake_stripe(settings):
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeStripe)
    server.calls = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    settings.STRIPE_API_BASE = f"http://127.0.0.1:{server.server_port}"
    yield server
    server.shutdown()
    server.server_close()
    thread.join(5)


def test_payment_intent_creates_the_customer_once_and_asks_for_what_is_due(
    invoice, fake_stripe, alice
):
    provider = payments.provider()
    ref = payments.invoice_payment_start(invoice=invoice, provider=provider)
    assert ref.id == "pi_3QpR7sLkdIwHu7ix0ZK9mD4e"
    assert ref.client_secret.startswith("pi_3QpR7sLkdIwHu7ix0ZK9mD4e_secret_")
    invoice.refresh_from_db()
    assert invoice.payment_intent_id == ref.id
    customer = BillingCustomer.objects.get(tenant=invoice.tenant)
    assert (customer.provider, customer.customer_id) == ("stripe", "cus_TAcmePools0001")
    paths = [path for path, _, _ in fake_stripe.calls]
    assert paths == ["/v1/customers", "/v1/payment_intents"]
    _, headers, form = fake_stripe.calls[1]
    assert headers["Authorization"] == "Bearer sk_test_poolsaas_fake"
    assert headers["Idempotency-Key"] == f"invoice-{invoice.code.hex}-1900"
    assert form["amount"] == ["1900"] and form["currency"] == ["eur"]
    assert form["customer"] == ["cus_TAcmePools0001"]
    assert form["metadata[invoice]"] == [invoice.code.hex]
    _, _, customer_form = fake_stripe.calls[0]
    assert customer_form["email"] == ["alice@acme.test"]
    # A second attempt reuses the customer.
    payments.invoice_payment_start(invoice=invoice, provider=provider)
    assert [p for p, _, _ in fake_stripe.calls].count("/v1/customers") == 1


def test_provider_errors_are_said_in_words(invoice, settings):
    settings.STRIPE_API_BASE = "http://127.0.0.1:9"  # nothing listens there
    with pytest.raises(payments.ProviderError, match="Stripe"):
        payments.invoice_payment_start(invoice=invoice, provider=payments.provider())
    assert not BillingCustomer.objects.exists()
    invoice.refresh_from_db()
    assert invoice.payment_intent_id == ""


def test_api_starts_a_payment_for_admins_only(invoice, fake_stripe, adam, victor):
    from poolsaas.api.testing import api_client, assert_error

    url = f"/api/v1/invoices/{invoice.code}/payment-intent/"
    assert_error(api_client(victor).post(url), 403)
    assert fake_stripe.calls == []
    response = api_client(adam).post(url)
    assert response.status_code == 201, response.content
    assert response.json()["payment_intent"] == "pi_3QpR7sLkdIwHu7ix0ZK9mD4e"
    Invoice.objects.filter(pk=invoice.pk).update(amount_paid_cents=1900)
    assert_error(api_client(adam).post(url), 400)


def test_api_payment_says_when_payments_are_off_or_stripe_fails(
    invoice, adam, settings
):
    from poolsaas.api.testing import api_client, assert_error

    url = f"/api/v1/invoices/{invoice.code}/payment-intent/"
    error = assert_error(api_client(adam).post(url), 502, "payment_provider_error")
    assert error["message"].startswith("Stripe")
    settings.STRIPE_API_KEY = ""
    assert_error(api_client(adam).post(url), 503, "payments_unavailable")


@pytest.mark.postgres_only
@pytest.mark.django_db(transaction=True)
def test_two_deliveries_of_one_event_at_once_pay_once(billed_a):  # noqa: F811
    from django.db import connections

    invoice = issue(billed_a)
    body = payload("payment_intent.succeeded", invoice=invoice.code.hex)
    data = payments.StripeProvider(
        api_key="sk_test_unused", webhook_secret=SECRET, api_base="http://127.0.0.1:9"
    ).webhook_parse(payload=body, headers={"Stripe-Signature": sign(body)})
    barrier = threading.Barrier(4)
    results, errors = [], []

    def deliver():
        try:
            barrier.wait(10)
            results.append(payments.payment_event_handle(data=data)[1])
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=deliver) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors
    assert sorted(results) == [False, False, False, True]
    assert Payment.objects.count() == 1 and ProviderEvent.objects.count() == 1
    invoice.refresh_from_db()
    assert (invoice.amount_paid_cents, invoice.status) == (1900, "paid")
