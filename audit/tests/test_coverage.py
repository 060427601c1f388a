"""Every action issue 2 lists reaches the trail through its real entry point (the
page, the admin, the management command), with tenant, actor, address and request
id; no secret value ever does; and audit_verify checks the result."""

import io
import re
from urllib.parse import urlsplit

import pytest
from django.core.management import CommandError, call_command
from django.db import connection
from django.test import Client
from django.urls import reverse

from audit.models import AuditEvent
from conftest import PASSWORD
from devices.models import Broker
from tenants.models import Invitation, Membership, Tenant, User

pytestmark = pytest.mark.django_db

BROKER_PASSWORD = "broker-pw-Zq81-never-logged"
BROKER_PASSWORD_2 = "broker-pw-Kx55-rotated-value"
BROKER_USERNAME = "broker-user-Yt77"
NEW_PASSWORD = "tide-lantern-92-copper"


def _client(ip: str) -> Client:
    return Client(REMOTE_ADDR=ip, HTTP_USER_AGENT="coverage-test/1.0")


def _rid(n: int) -> dict:
    return {"HTTP_X_REQUEST_ID": f"coverage-req-{n:04d}"}


def test_every_listed_action_is_recorded_and_the_chain_verifies(
    alice, olivia, victor, carol, mailoutbox, django_capture_on_commit_callbacks
):
    tenant = alice.tenant
    # Login failure and success, from a known address with a request id.
    web = _client("203.0.113.7")
    web.post(reverse("login"), {"username": "alice@acme.test", "password": "no"})
    web.post(
        reverse("login"),
        {"username": "alice@acme.test", "password": PASSWORD},
        **_rid(1),
    )
    # Invitation: create, revoke, create again and accept.
    web.post(reverse("team_invite"), {"email": "gone@acme.test", "role": "viewer"})
    gone = Invitation.objects.get(email="gone@acme.test")
    web.post(reverse("invitation_revoke", args=[gone.code]))
    with django_capture_on_commit_callbacks(execute=True):
        web.post(reverse("team_invite"), {"email": "new@acme.test", "role": "viewer"})
    link = re.search(r"https?://\S+/invitations/\S+/", mailoutbox[-1].body).group(0)
    newbie = _client("203.0.113.8")
    newbie.post(
        urlsplit(link).path,
        {"full_name": "New", "password1": NEW_PASSWORD, "password2": NEW_PASSWORD},
    )
    # Role change and member removal.
    web.post(reverse("member_role", args=[olivia.code]), {"role": "viewer"})
    web.post(reverse("member_remove", args=[victor.code]))
    # Broker: create with secrets, change the password, delete.
    web.post(
        reverse("broker_add"),
        {
            "name": "Own",
            "host": "mqtt.example.com",
            "port": "8883",
            "use_tls": "on",
            "topic_prefix": "devices",
            "username": BROKER_USERNAME,
            "password": BROKER_PASSWORD,
        },
    )
    broker = Broker.objects.get(tenant=tenant, name="Own")
    web.post(
        reverse("broker_edit", args=[broker.code]),
        {
            "name": "Own",
            "host": "mqtt.example.com",
            "port": "8883",
            "use_tls": "on",
            "topic_prefix": "devices",
            "password": BROKER_PASSWORD_2,
        },
        **_rid(2),
    )
    web.post(reverse("broker_delete", args=[broker.code]))
    # Logout.
    web.post(reverse("logout"))
    # Key rotation (management command; platform chain).
    call_command("rotate_encryption_keys", stdout=io.StringIO())
    # Staff admin: change a tenant, suspend it, add and delete a membership.
    staff = User.objects.create_superuser(email="staff@poolsaas.test", password="x")
    admin = _client("198.51.100.9")
    admin.force_login(staff)
    admin.post(
        reverse("admin:tenants_tenant_change", args=[carol.tenant.pk]),
        {"name": "Globex Renamed", "slug": "globex", "plan": ""},
    )
    admin.post(
        reverse("admin:tenants_tenant_changelist"),
        {"action": "suspend_tenants", "_selected_action": [carol.tenant.pk]},
    )
    extra = Membership.objects.create(
        tenant=tenant, user=User.objects.create_user("temp@acme.test"), role="viewer"
    )
    admin.post(
        reverse("admin:tenants_membership_delete", args=[extra.pk]), {"post": "yes"}
    )

    def one(action, **filters):
        found = list(AuditEvent.objects.filter(action=action, **filters))
        assert found, f"no {action!r} event"
        return found[-1]

    failed = one("login.failed")
    assert failed.tenant is None and failed.actor_label == "alice@acme.test"
    assert failed.ip == "203.0.113.7" and failed.user_agent == "coverage-test/1.0"
    login = one("login.succeeded", tenant=tenant, actor=alice.user)
    assert login.request_id == "coverage-req-0001"
    assert login.ip == "203.0.113.7"
    one("invitation.created", tenant=tenant, actor=alice.user)
    one("invitation.revoked", tenant=tenant, actor=alice.user)
    accepted = one("invitation.accepted", tenant=tenant)
    assert accepted.actor.email == "new@acme.test" and accepted.ip == "203.0.113.8"
    role = one("membership.role_changed", tenant=tenant, actor=alice.user)
    assert role.data["from"] == "operator" and role.data["to"] == "viewer"
    removed = one("membership.removed", tenant=tenant, actor=alice.user)
    assert removed.data["user"] == "victor@acme.test"
    one("broker.created", tenant=tenant, actor=alice.user)
    secret = one("broker.secret_changed", tenant=tenant, actor=alice.user)
    assert secret.data["fields"] == ["password"]
    assert secret.request_id == "coverage-req-0002"
    one("broker.deleted", tenant=tenant, actor=alice.user)
    one("logout", tenant=tenant, actor=alice.user)
    rotated = one("encryption_keys.rotated")
    assert rotated.tenant is None
    assert "devices.Broker" in rotated.data["rows"]
    renamed = one("admin.changed", tenant=carol.tenant, actor=staff)
    assert "name" in renamed.data["fields"] and renamed.source == "admin"
    assert renamed.ip == "198.51.100.9"
    one("tenant.suspended", tenant=carol.tenant, actor=staff)
    one("membership.removed", tenant=tenant, actor=staff)
    assert Tenant.objects.get(pk=carol.tenant.pk).status == "suspended"

    # No secret value, typed password or token anywhere in the trail.
    dump = repr(
        list(AuditEvent.objects.values_list("data", "target_label", "actor_label"))
    )
    for secret_value in (
        BROKER_PASSWORD,
        BROKER_PASSWORD_2,
        BROKER_USERNAME,
        PASSWORD,
        NEW_PASSWORD,
        urlsplit(link).path.rstrip("/").rsplit("/", 1)[-1],
    ):
        assert secret_value not in dump

    out = io.StringIO()
    call_command("audit_verify", stdout=out)
    assert "All audit chains intact" in out.getvalue()

    # Tamper with the role change behind the ORM's back: audit_verify names it.
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {AuditEvent._meta.db_table} SET data = %s WHERE id = %s",  # noqa: S608
            [
                '{"from": "operator", "to": "owner", "user": "olivia@acme.test"}',
                role.pk,
            ],
        )
    out = io.StringIO()
    with pytest.raises(CommandError):
        call_command("audit_verify", stdout=out)
    assert f"BROKEN at event #{role.seq} ({role.code})" in out.getvalue()
    assert "content changed" in out.getvalue()
