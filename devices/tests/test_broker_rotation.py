"""Staging new credentials for a tenant's broker (services, page, API): write-only,
audited without values, admins only, cleared when the address moves, and promoted
only by a compare-and-swap. The bridge side is test_broker_rotation_bridge.py."""

import uuid

import pytest
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import Http404
from django.urls import reverse

from audit.models import AuditEvent
from devices.models import Broker
from devices.services.brokers import (
    broker_create,
    broker_credentials_cancel,
    broker_credentials_promote,
    broker_credentials_refused,
    broker_credentials_stage,
    broker_update,
)
from devices.tests import test_admin
from devices.tests.conftest import BROKER_PASSWORD, BROKER_USER
from devices.tests.test_admin import broker_post
from poolsaas.api.testing import api_client, assert_error

pytestmark = pytest.mark.django_db

NEW_USER = "acme-rotated-user-Q9"
NEW_PASSWORD = "rotated-Secret-Pa55-77"
BROKERS = "/api/v1/brokers/"


def fresh(broker) -> Broker:
    return Broker.objects.get(pk=broker.pk)


def no_secret_in(text: str) -> None:
    for secret in (NEW_USER, NEW_PASSWORD, BROKER_PASSWORD):
        assert secret not in text


def test_staging_keeps_the_current_pair_and_audits_no_value(alice, broker_a):
    broker_credentials_stage(
        membership=alice, broker=broker_a, username=NEW_USER, password=NEW_PASSWORD
    )
    broker = fresh(broker_a)
    assert (broker.username, broker.password) == (BROKER_USER, BROKER_PASSWORD)
    assert (broker.pending_username, broker.pending_password) == (
        NEW_USER,
        NEW_PASSWORD,
    )
    assert broker.credentials_pending_since is not None
    event = AuditEvent.objects.get(action="broker.credentials_staged")
    assert event.actor == alice.user
    no_secret_in(str(event.data))


def test_an_empty_username_keeps_the_current_one(alice, broker_a):
    broker_credentials_stage(
        membership=alice, broker=broker_a, username="", password=NEW_PASSWORD
    )
    assert fresh(broker_a).pending_username == BROKER_USER


def test_a_password_is_required(alice, broker_a):
    with pytest.raises(ValidationError) as exc:
        broker_credentials_stage(
            membership=alice, broker=broker_a, username=NEW_USER, password=""
        )
    assert "password" in exc.value.message_dict
    assert fresh(broker_a).credentials_pending_since is None


def test_roles_too_low_and_another_tenant(victor, olivia, carol, broker_a):
    for member in (victor, olivia):
        with pytest.raises(PermissionDenied):
            broker_credentials_stage(
                membership=member, broker=broker_a, username="", password="x"
            )
    with pytest.raises(Http404):
        broker_credentials_stage(
            membership=carol, broker=broker_a, username="", password="x"
        )
    with pytest.raises(Http404):
        broker_credentials_cancel(membership=carol, broker=broker_a)
    assert fresh(broker_a).credentials_pending_since is None


def test_promotion_is_a_compare_and_swap(alice, broker_a):
    broker_credentials_stage(
        membership=alice, broker=broker_a, username=NEW_USER, password=NEW_PASSWORD
    )
    tried = fresh(broker_a).credentials_pending_since
    broker_credentials_stage(
        membership=alice, broker=broker_a, username=NEW_USER, password="newer"
    )
    assert not broker_credentials_promote(broker_id=broker_a.pk, staged_at=tried)
    broker = fresh(broker_a)
    assert broker.password == BROKER_PASSWORD and broker.pending_password == "newer"
    assert not broker_credentials_refused(
        broker_id=broker_a.pk, staged_at=tried, reason="Not authorized"
    )
    assert fresh(broker_a).credentials_refused_at is None

    assert broker_credentials_promote(
        broker_id=broker_a.pk, staged_at=broker.credentials_pending_since
    )
    broker = fresh(broker_a)
    assert (broker.username, broker.password) == (NEW_USER, "newer")
    assert broker.credentials_pending_since is None and broker.pending_password == ""
    assert broker.credentials_rotated_at is not None
    # Promoted once: the same staging time promotes nothing again.
    assert not broker_credentials_promote(broker_id=broker_a.pk, staged_at=tried)


def test_an_address_change_clears_a_staged_pair(alice, broker_a):
    broker_credentials_stage(
        membership=alice, broker=broker_a, username=NEW_USER, password=NEW_PASSWORD
    )
    broker_update(
        membership=alice,
        broker=broker_a,
        host="mqtt2.acme.test",
        username=BROKER_USER,
        password=BROKER_PASSWORD,
    )
    broker = fresh(broker_a)
    assert broker.credentials_pending_since is None
    assert broker.pending_password == "" and broker.pending_username == ""
    event = AuditEvent.objects.get(action="broker.updated")
    assert event.data["staged_credentials_cleared"] is True
    # A change that does not move the address keeps it.
    broker_credentials_stage(
        membership=alice, broker=broker, username=NEW_USER, password=NEW_PASSWORD
    )
    broker_update(membership=alice, broker=broker, name="Acme renamed")
    assert fresh(broker).pending_password == NEW_PASSWORD


def test_cancel_forgets_the_staged_pair(alice, broker_a):
    broker_credentials_stage(
        membership=alice, broker=broker_a, username=NEW_USER, password=NEW_PASSWORD
    )
    broker_credentials_cancel(membership=alice, broker=broker_a)
    broker = fresh(broker_a)
    assert broker.credentials_pending_since is None and broker.pending_password == ""
    assert broker.password == BROKER_PASSWORD
    assert AuditEvent.objects.filter(
        action="broker.credentials_rotation_cancelled"
    ).exists()


# --- page -------------------------------------------------------------------------


def test_the_page_stages_write_only_and_shows_the_state(login, alice, broker_a):
    client = login(alice)
    response = client.post(
        f"/brokers/{broker_a.code}/rotate/",
        {"new_username": NEW_USER, "new_password": NEW_PASSWORD},
        follow=True,
    )
    assert response.status_code == 200
    text = response.content.decode()
    assert "New credentials staged since" in text
    assert "Test the new credentials" in text
    no_secret_in(text)
    assert fresh(broker_a).pending_password == NEW_PASSWORD
    listing = client.get("/brokers/").content.decode()
    assert "new credentials pending since" in listing
    no_secret_in(listing)


def test_the_page_refuses_an_empty_password(login, alice, broker_a):
    response = login(alice).post(
        f"/brokers/{broker_a.code}/rotate/",
        {"new_username": NEW_USER, "new_password": ""},
    )
    assert response.status_code == 400
    assert NEW_USER not in response.content.decode()
    assert fresh(broker_a).credentials_pending_since is None


@pytest.mark.parametrize("who", ["victor", "olivia"])
def test_the_page_is_for_admins(login, who, request, broker_a):
    member = request.getfixturevalue(who)
    response = login(member).post(
        f"/brokers/{broker_a.code}/rotate/", {"new_password": NEW_PASSWORD}
    )
    assert response.status_code == 403
    assert fresh(broker_a).credentials_pending_since is None


def test_the_page_answers_404_for_foreign_and_made_up_brokers(login, carol, broker_a):
    client = login(carol)
    for code in (broker_a.code, uuid.uuid4()):
        for url in (f"/brokers/{code}/rotate/", f"/brokers/{code}/rotate/cancel/"):
            assert client.post(url, {"new_password": "x"}).status_code == 404
    assert fresh(broker_a).credentials_pending_since is None


# --- API --------------------------------------------------------------------------


def test_api_stages_and_shows_the_state_without_secrets(adam, broker_a):
    url = f"{BROKERS}{broker_a.code}/rotate-credentials/"
    response = api_client(adam).post(
        url, {"username": NEW_USER, "password": NEW_PASSWORD}, format="json"
    )
    assert response.status_code == 200, response.content
    no_secret_in(response.content.decode())
    rotation = response.json()["credentials_rotation"]
    assert rotation["pending"] is True and rotation["pending_since"]
    assert rotation["refused_at"] is None
    detail = api_client(adam).get(f"{BROKERS}{broker_a.code}/")
    assert detail.json()["credentials_rotation"]["pending"] is True
    no_secret_in(detail.content.decode())

    response = api_client(adam).delete(url)
    assert response.status_code == 200
    assert response.json()["credentials_rotation"]["pending"] is False


def test_api_bad_input_changes_nothing(adam, broker_a):
    url = f"{BROKERS}{broker_a.code}/rotate-credentials/"
    error = assert_error(
        api_client(adam).post(url, {"username": NEW_USER}, format="json"), 400
    )
    assert "password" in error["fields"]
    assert fresh(broker_a).credentials_pending_since is None


@pytest.mark.parametrize("who", ["victor", "olivia"])
def test_api_is_for_admins(who, request, broker_a):
    member = request.getfixturevalue(who)
    url = f"{BROKERS}{broker_a.code}/rotate-credentials/"
    response = api_client(member).post(url, {"password": "x"}, format="json")
    assert_error(response, 403)
    assert fresh(broker_a).credentials_pending_since is None


def test_api_answers_404_for_foreign_and_made_up_brokers(carol, broker_a):
    for code in (broker_a.code, uuid.uuid4(), "nope"):
        url = f"{BROKERS}{code}/rotate-credentials/"
        assert_error(api_client(carol).post(url, {"password": "x"}, format="json"), 404)
        assert_error(api_client(carol).delete(url), 404)
    assert fresh(broker_a).credentials_pending_since is None


def test_the_platform_broker_cannot_be_staged(alice, platform_broker):
    with pytest.raises(Http404):
        broker_credentials_stage(
            membership=alice, broker=platform_broker, username="", password="x"
        )


def test_create_is_unaffected(alice):
    broker = broker_create(
        membership=alice, name="Other", host="mqtt3.acme.test", topic_prefix="x"
    )
    assert broker.credentials_pending_since is None


staff, staff_client = test_admin.staff, test_admin.staff_client


def test_a_staff_address_change_clears_a_staged_pair(staff_client, alice, broker_a):
    broker_credentials_stage(
        membership=alice, broker=broker_a, username=NEW_USER, password=NEW_PASSWORD
    )
    url = reverse("admin:devices_broker_change", args=[broker_a.pk])
    response = staff_client.post(
        url,
        broker_post(
            broker_a,
            host="mqtt2.acme.test",
            new_username=BROKER_USER,
            new_password=BROKER_PASSWORD,
        ),
    )
    assert response.status_code == 302
    broker = fresh(broker_a)
    assert broker.host == "mqtt2.acme.test"
    assert broker.credentials_pending_since is None and broker.pending_password == ""
