"""Secrets at rest: encrypted in the column, loud when undecryptable, rotatable.

devices/fields.py reads settings.FIELD_ENCRYPTION_KEY on every use, so the
`settings` fixture switches keys inside a test.
"""

import io

import pytest
from cryptography.fernet import Fernet, InvalidToken
from django.core.management import CommandError, call_command
from django.db import connection
from django.db.transaction import atomic

from alerts.models import WebhookSubscription
from audit.models import AuditEvent
from devices.fields import SecretDecryptionError
from devices.models import Broker, Device
from devices.services.brokers import broker_create
from devices.tests.conftest import BROKER_PASSWORD, BROKER_USER, DEVICE_PASSWORD


def raw_column(model, field: str, pk) -> str:
    table = connection.ops.quote_name(model._meta.db_table)
    column = connection.ops.quote_name(model._meta.get_field(field).column)
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT {column} FROM {table} WHERE id = %s", [pk])  # noqa: S608
        return cursor.fetchone()[0]


def write_raw_column(model, field: str, pk, value: str) -> None:
    table = connection.ops.quote_name(model._meta.db_table)
    column = connection.ops.quote_name(model._meta.get_field(field).column)
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {table} SET {column} = %s WHERE id = %s",  # noqa: S608
            [value, pk],
        )


@pytest.fixture
def old_key(settings):
    key = Fernet.generate_key().decode()
    settings.FIELD_ENCRYPTION_KEY = [key]
    return key


def test_raw_password_column_holds_a_fernet_token_not_plaintext(
    old_key, broker_a, secret_device
):
    raw = raw_column(Broker, "password", broker_a.pk)
    assert BROKER_PASSWORD not in raw
    assert BROKER_USER not in raw_column(Broker, "username", broker_a.pk)
    assert Fernet(old_key).decrypt(raw.encode()).decode() == BROKER_PASSWORD
    raw_device = raw_column(Device, "mqtt_password", secret_device.pk)
    assert DEVICE_PASSWORD not in raw_device
    assert Fernet(old_key).decrypt(raw_device.encode()).decode() == DEVICE_PASSWORD
    # And the ORM reads the plaintext back.
    assert Broker.objects.get(pk=broker_a.pk).password == BROKER_PASSWORD


def test_a_value_no_key_decrypts_raises_instead_of_returning_ciphertext(
    settings, old_key, broker_a
):
    stranger = Fernet(Fernet.generate_key()).encrypt(b"someone else's").decode()
    write_raw_column(Broker, "password", broker_a.pk, stranger)
    broker = Broker.objects.get(pk=broker_a.pk)  # loads; decrypts only on use
    with pytest.raises(SecretDecryptionError) as caught:
        _ = broker.password
    message = str(caught.value)
    assert "Broker.password" in message
    assert "FIELD_ENCRYPTION_KEYS" in message
    assert stranger not in message  # the token itself never reaches a log

    # The same for a good token once its key is no longer configured.
    write_raw_column(
        Broker,
        "password",
        broker_a.pk,
        Fernet(old_key).encrypt(BROKER_PASSWORD.encode()).decode(),
    )
    assert Broker.objects.get(pk=broker_a.pk).password == BROKER_PASSWORD
    settings.FIELD_ENCRYPTION_KEY = [Fernet.generate_key().decode()]
    with pytest.raises(SecretDecryptionError):
        _ = Broker.objects.get(pk=broker_a.pk).password


def test_plain_text_in_the_column_is_not_passed_off_as_a_secret(old_key, broker_a):
    # The library this wraps would have returned "hunter2" as if it were the value.
    write_raw_column(Broker, "password", broker_a.pk, "hunter2")
    with pytest.raises(SecretDecryptionError):
        _ = Broker.objects.get(pk=broker_a.pk).password


def test_rotation_re_encrypts_every_secret_under_the_new_key(
    settings, old_key, broker_a, secret_device, platform_broker
):
    platform_broker.username = "platform-user"
    platform_broker.password = "platform-Pw-Rot8"
    platform_broker.save()
    webhook = WebhookSubscription.objects.create(
        tenant=broker_a.tenant,
        url="https://hooks.example.com/pool",
        secret="whsec-Rot8",
    )
    before = {
        (model, field, pk): raw_column(model, field, pk)
        for model, field, pk in [
            (Broker, "username", broker_a.pk),
            (Broker, "password", broker_a.pk),
            (Broker, "username", platform_broker.pk),
            (Broker, "password", platform_broker.pk),
            (Device, "mqtt_password", secret_device.pk),
            (WebhookSubscription, "secret", webhook.pk),
        ]
    }
    new_key = Fernet.generate_key().decode()
    settings.FIELD_ENCRYPTION_KEY = [new_key, old_key]
    out = io.StringIO()
    call_command("rotate_encryption_keys", stdout=out)
    assert "devices.Broker: 2 rows re-encrypted" in out.getvalue()
    assert "devices.Device: 1 rows re-encrypted" in out.getvalue()
    assert "alerts.WebhookSubscription: 1 rows re-encrypted" in out.getvalue()

    for (model, field, pk), old_raw in before.items():
        new_raw = raw_column(model, field, pk)
        assert new_raw != old_raw
        Fernet(new_key).decrypt(new_raw.encode())  # under the new key alone
        with pytest.raises(InvalidToken):
            Fernet(old_key).decrypt(new_raw.encode())

    # The old key can go: every secret still reads back.
    settings.FIELD_ENCRYPTION_KEY = [new_key]
    broker = Broker.objects.get(pk=broker_a.pk)
    assert (broker.username, broker.password) == (BROKER_USER, BROKER_PASSWORD)
    platform = Broker.objects.get(pk=platform_broker.pk)
    assert (platform.username, platform.password) == (
        "platform-user",
        "platform-Pw-Rot8",
    )
    assert Device.objects.get(pk=secret_device.pk).mqtt_password == DEVICE_PASSWORD
    assert WebhookSubscription.objects.get(pk=webhook.pk).secret == "whsec-Rot8"

    event = AuditEvent.objects.get(action="encryption_keys.rotated")
    assert event.data == {
        "rows": {
            "devices.Broker": 2,
            "devices.Device": 1,
            "alerts.WebhookSubscription": 1,
        }
    }
    assert event.tenant_id is None


def test_rotation_fails_clearly_and_changes_nothing_on_an_unknown_token(
    settings, old_key, broker_a, secret_device
):
    stranger = Fernet(Fernet.generate_key()).encrypt(b"lost").decode()
    write_raw_column(Device, "mqtt_password", secret_device.pk, stranger)
    broker_raw = raw_column(Broker, "password", broker_a.pk)
    settings.FIELD_ENCRYPTION_KEY = [Fernet.generate_key().decode(), old_key]
    with pytest.raises(CommandError) as caught:
        call_command("rotate_encryption_keys")
    message = str(caught.value)
    assert f"devices.Device #{secret_device.pk} ({secret_device.code})" in message
    assert "mqtt_password cannot be decrypted" in message
    assert "nothing was changed" in message
    assert stranger not in message
    # All or nothing: the broker that came first was not re-encrypted either.
    assert raw_column(Broker, "password", broker_a.pk) == broker_raw
    assert not AuditEvent.objects.filter(action="encryption_keys.rotated").exists()


def test_rotation_is_safe_to_run_twice(settings, old_key, broker_a):
    new_key = Fernet.generate_key().decode()
    settings.FIELD_ENCRYPTION_KEY = [new_key, old_key]
    call_command("rotate_encryption_keys", stdout=io.StringIO())
    call_command("rotate_encryption_keys", stdout=io.StringIO())
    settings.FIELD_ENCRYPTION_KEY = [new_key]
    assert Broker.objects.get(pk=broker_a.pk).password == BROKER_PASSWORD
    assert AuditEvent.objects.filter(action="encryption_keys.rotated").count() == 2


def test_empty_secrets_round_trip(old_key, alice):
    broker = broker_create(
        membership=alice, name="Open", host="open.test", port=1883, use_tls=False
    )
    fresh = Broker.objects.get(pk=broker.pk)
    assert (fresh.username, fresh.password) == ("", "")
    # An empty secret is stored as no token, so that "is one set?" needs no
    # decryption (a Fernet token hints at the length of what it holds anyway).
    assert raw_column(Broker, "password", broker.pk) == ""


def test_queryset_update_encrypts_plain_values_and_refuses_expressions(
    old_key, broker_a
):
    from django.db.models import F, Value

    Broker.objects.filter(pk=broker_a.pk).update(password="via-Update-Pw-5")
    raw = raw_column(Broker, "password", broker_a.pk)
    assert "via-Update-Pw-5" not in raw
    assert Broker.objects.get(pk=broker_a.pk).password == "via-Update-Pw-5"
    for expression in (F("name"), Value("plaintext-by-expression")):
        with pytest.raises(TypeError, match="takes a plain value"), atomic():
            Broker.objects.filter(pk=broker_a.pk).update(password=expression)
    assert raw_column(Broker, "password", broker_a.pk) == raw
