"""Staff admin of the devices app: secrets masked and write-only, changes audited,
history read-only."""

import pytest
from cryptography.fernet import Fernet
from django.db import connection
from django.urls import reverse

from audit.models import AuditEvent
from devices.models import Broker, Command, Device, Pool
from devices.services.brokers import broker_create
from devices.tests.conftest import BROKER_PASSWORD, BROKER_USER, DEVICE_PASSWORD


@pytest.fixture
def staff(make_user):
    return make_user("staff@poolsaas.test", is_staff=True, is_superuser=True)


@pytest.fixture
def staff_client(client, staff):
    client.force_login(staff)
    return client


def broker_post(broker, **overrides):
    data = {
        "tenant": broker.tenant_id,
        "name": broker.name,
        "host": broker.host,
        "port": broker.port,
        "use_tls": "on" if broker.use_tls else "",
        "ca_certificate": "",
        "websocket_url": "",
        "topic_prefix": broker.topic_prefix,
        "new_username": "",
        "new_password": "",
        "_save": "Save",
    }
    data.update(overrides)
    return {k: v for k, v in data.items() if v != ""}


def test_broker_list_and_form_never_show_secrets(staff_client, broker_a):
    changelist = staff_client.get(reverse("admin:devices_broker_changelist"))
    assert changelist.status_code == 200
    html = changelist.content.decode()
    assert "Acme broker" in html
    assert html.count("••• set") == 2
    assert BROKER_USER not in html and BROKER_PASSWORD not in html

    change = staff_client.get(
        reverse("admin:devices_broker_change", args=[broker_a.pk])
    )
    assert change.status_code == 200
    html = change.content.decode()
    assert "Currently: ••• set" in html
    assert BROKER_USER not in html and BROKER_PASSWORD not in html
    assert 'name="new_password"' in html and 'name="username"' not in html


def test_broker_blank_keeps_typed_sets_clear_clears_and_is_audited(
    staff_client, staff, broker_a
):
    url = reverse("admin:devices_broker_change", args=[broker_a.pk])
    response = staff_client.post(url, broker_post(broker_a, name="Acme broker 2"))
    assert response.status_code == 302, response.context["adminform"].form.errors
    broker = Broker.objects.get(pk=broker_a.pk)
    assert broker.name == "Acme broker 2"
    assert (broker.username, broker.password) == (BROKER_USER, BROKER_PASSWORD)

    response = staff_client.post(
        url, broker_post(broker, new_password="staff-Set-Pw-88", clear_username="on")
    )
    assert response.status_code == 302
    broker = Broker.objects.get(pk=broker_a.pk)
    assert (broker.username, broker.password) == ("", "staff-Set-Pw-88")
    assert broker.secrets_changed_at is not None

    events = list(
        AuditEvent.objects.filter(
            action="admin.changed", target_code=broker.code
        ).order_by("seq")
    )
    assert [e.data["fields"] for e in events] == [
        ["name"],
        ["clear_username", "new_password"],
    ]
    assert all(e.actor_id == staff.pk and e.source == "admin" for e in events)
    assert all(e.tenant_id == broker.tenant_id for e in events)
    assert "staff-Set-Pw-88" not in str([e.data for e in events])


def test_broker_form_refuses_bad_input(staff_client, broker_a):
    url = reverse("admin:devices_broker_change", args=[broker_a.pk])
    response = staff_client.post(
        url,
        broker_post(
            broker_a,
            host="mqtt://nope",
            websocket_url="http://x",
            new_password="never-Saved-77",
            clear_password="on",
        ),
    )
    assert response.status_code == 200
    errors = response.context["adminform"].form.errors
    assert {"host", "websocket_url", "new_password"} <= set(errors)
    assert "never-Saved-77" not in response.content.decode()
    broker = Broker.objects.get(pk=broker_a.pk)
    assert (broker.host, broker.password) == ("mqtt.acme.test", BROKER_PASSWORD)
    assert not AuditEvent.objects.filter(action="admin.changed").exists()


def test_broker_added_in_admin_is_encrypted_and_audited(staff_client, tenant_a):
    response = staff_client.post(
        reverse("admin:devices_broker_add"),
        {
            "tenant": tenant_a.pk,
            "name": "Staff broker",
            "host": "staff.example.com",
            "port": "8883",
            "use_tls": "on",
            "topic_prefix": "devices",
            "new_username": "staff-user",
            "new_password": "staff-Added-Pw-1",
            "_save": "Save",
        },
    )
    assert response.status_code == 302
    broker = Broker.objects.get(name="Staff broker")
    assert (broker.username, broker.password) == ("staff-user", "staff-Added-Pw-1")
    with connection.cursor() as cursor:
        cursor.execute("SELECT password FROM devices_broker WHERE id = %s", [broker.pk])
        assert "staff-Added-Pw-1" not in cursor.fetchone()[0]
    event = AuditEvent.objects.get(action="admin.created", target_code=broker.code)
    assert event.tenant_id == tenant_a.pk


def test_broker_without_tenant_is_refused(staff_client):
    response = staff_client.post(
        reverse("admin:devices_broker_add"),
        {"name": "Orphan", "host": "x.test", "port": "1883", "topic_prefix": "d"},
    )
    assert response.status_code == 200
    assert "needs a tenant" in response.content.decode()
    assert not Broker.objects.filter(name="Orphan").exists()


def test_unreadable_secret_does_not_break_the_admin(staff_client, broker_a, settings):
    settings.FIELD_ENCRYPTION_KEY = [Fernet.generate_key().decode()]
    html = staff_client.get(reverse("admin:devices_broker_changelist")).content.decode()
    assert "⚠ cannot be decrypted" in html
    response = staff_client.get(
        reverse("admin:devices_broker_change", args=[broker_a.pk])
    )
    assert response.status_code == 200
    assert "Currently: ⚠ cannot be decrypted" in response.content.decode()
    # Staff can repair it by typing a new password under the current key.
    response = staff_client.post(
        reverse("admin:devices_broker_change", args=[broker_a.pk]),
        broker_post(broker_a, new_password="repaired-Pw-1", new_username="u"),
    )
    assert response.status_code == 302
    broker = Broker.objects.get(pk=broker_a.pk)
    assert (broker.username, broker.password) == ("u", "repaired-Pw-1")


def test_device_admin_masks_mqtt_password(staff_client, secret_device, pool_b):
    html = staff_client.get(reverse("admin:devices_device_changelist")).content.decode()
    assert secret_device.device_id in html and "••• set" in html
    assert DEVICE_PASSWORD not in html
    url = reverse("admin:devices_device_change", args=[secret_device.pk])
    html = staff_client.get(url).content.decode()
    assert DEVICE_PASSWORD not in html
    assert "Currently: ••• set" in html

    data = {
        "tenant": secret_device.tenant_id,
        "device_id": secret_device.device_id,
        "pool": secret_device.pool_id,
        "broker": secret_device.broker_id,
        "topic_prefix": "devices",
        "protocol": "ps1",
        "_save": "Save",
    }
    # Another tenant's pool is refused.
    response = staff_client.post(url, {**data, "pool": pool_b.pk})
    assert response.status_code == 200
    assert "belongs to another tenant" in response.content.decode()
    assert Device.objects.get(pk=secret_device.pk).pool_id == secret_device.pool_id
    # Blank keeps the password.
    response = staff_client.post(url, {**data, "protocol": "v3.1"})
    assert response.status_code == 302
    device = Device.objects.get(pk=secret_device.pk)
    assert (device.protocol, device.mqtt_password) == ("v3.1", DEVICE_PASSWORD)


def test_pool_admin_validates_time_zone_and_bumps_config(staff_client, pool_a):
    url = reverse("admin:devices_pool_change", args=[pool_a.pk])
    data = {
        "tenant": pool_a.tenant_id,
        "name": pool_a.name,
        "timezone": "Nowhere/Land",
        "mode1_name": "Cascada",
        "mode2_name": "Eyectores",
        "settings": "{}",
        "_save": "Save",
    }
    response = staff_client.post(url, data)
    assert response.status_code == 200
    assert "Unknown time zone" in response.content.decode()
    assert Pool.objects.get(pk=pool_a.pk).timezone == "Europe/Madrid"
    response = staff_client.post(url, {**data, "timezone": "Europe/Paris"})
    assert response.status_code == 302
    pool = Pool.objects.get(pk=pool_a.pk)
    assert (pool.timezone, pool.config_version) == (
        "Europe/Paris",
        pool_a.config_version + 1,
    )


def test_history_is_read_only(staff_client, secret_device):
    from django.utils import timezone

    command = Command.objects.create(
        tenant=secret_device.tenant,
        device=secret_device,
        op="pump",
        value="ON",
        expires_at=timezone.now(),
    )
    # Samples: telemetry/tests/test_admin.py.
    for model in ("command", "deviceevent", "program"):
        assert (
            staff_client.get(reverse(f"admin:devices_{model}_changelist")).status_code
            == 200
        )
        assert (
            staff_client.get(reverse(f"admin:devices_{model}_add")).status_code == 403
        )
    url = reverse("admin:devices_command_change", args=[command.pk])
    assert staff_client.get(url).status_code == 200  # view only
    assert staff_client.post(url, {"status": "done"}).status_code == 403
    delete = reverse("admin:devices_command_delete", args=[command.pk])
    assert staff_client.post(delete, {"post": "yes"}).status_code == 403
    assert Command.objects.get(pk=command.pk).status == "pending"


def test_search_and_tenant_filter(staff_client, broker_a, carol):
    broker_create(
        membership=carol, name="Globex broker", host="g.test", port=1883, use_tls=False
    )
    url = reverse("admin:devices_broker_changelist")
    html = staff_client.get(url, {"q": "globex"}).content.decode()
    assert "Globex broker" in html and "Acme broker" not in html
    html = staff_client.get(
        url, {"tenant__id__exact": broker_a.tenant_id}
    ).content.decode()
    assert "Acme broker" in html and "Globex broker" not in html


def test_admin_delete_is_audited(staff_client, broker_a):
    response = staff_client.post(
        reverse("admin:devices_broker_delete", args=[broker_a.pk]), {"post": "yes"}
    )
    assert response.status_code == 302
    assert not Broker.objects.filter(pk=broker_a.pk).exists()
    event = AuditEvent.objects.get(action="admin.deleted")
    assert event.target_code == str(broker_a.code)


def test_non_staff_cannot_open_the_admin(login, alice, broker_a):
    response = login(alice).get(reverse("admin:devices_broker_changelist"))
    assert response.status_code == 302
    assert "/admin/login/" in response["Location"]
