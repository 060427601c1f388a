"""Issue 10.10: secrets are decrypted only where they are used.

Loading device or broker rows (a state read, a devices page, an API list) decrypts
nothing; an undecryptable password breaks only the code that needs it.
"""

from unittest import mock

import pytest
from cryptography.fernet import Fernet
from django.urls import reverse

from devices import fields
from devices.bridge.directory import Directory
from devices.models import Broker, Device
from devices.selectors import brokers_for_bridge, devices_for_bridge
from devices.services.brokers import broker_secrets_status
from devices.tests.conftest import BROKER_PASSWORD, DEVICE_PASSWORD
from devices.tests.test_secrets import write_raw_column
from poolsaas.api.testing import api_client


@pytest.fixture
def decryptions():
    """Counts every decryption of a stored secret."""
    with mock.patch.object(
        fields, "decrypt_secret", wraps=fields.decrypt_secret
    ) as counter:
        yield counter


@pytest.fixture
def secret_broker_device(secret_device, broker_a, pool_a, tenant_a):
    """Two devices of tenant A holding passwords: one on the platform broker, one on
    the tenant's own broker (with its username and password)."""
    from devices.models import Pool

    other = Device.objects.create(
        tenant=tenant_a,
        pool=Pool.objects.create(tenant=tenant_a, name="Second"),
        broker=broker_a,
        device_id="ESP-C4C4C4",
        topic_prefix=broker_a.topic_prefix,
        mqtt_password="another-Device-Pw-1",
    )
    return secret_device, other


def test_state_and_list_paths_decrypt_nothing(
    victor, login, secret_broker_device, decryptions
):
    device, other = secret_broker_device
    client = api_client(victor)
    for url in (
        "/api/v1/devices/",
        f"/api/v1/devices/{device.code}/",
        f"/api/v1/devices/{device.code}/state/",
        f"/api/v1/devices/{other.code}/state/",
        "/api/v1/pools/",
        f"/api/v1/pools/{device.pool.code}/",
        f"/api/v1/pools/{device.pool.code}/state/",
    ):
        assert client.get(url).status_code == 200, url
    page = login(victor)
    for url in (
        reverse("devices"),
        reverse("pools"),
        reverse("pool_detail", args=[device.pool.code]),
    ):
        assert page.get(url).status_code == 200, url
    assert decryptions.call_count == 0


def test_the_bridges_directory_and_broker_list_decrypt_nothing(
    secret_broker_device, decryptions
):
    brokers = list(brokers_for_bridge())
    Directory.build(devices_for_bridge(broker_ids=[b.pk for b in brokers]))
    assert {b.pk for b in brokers} >= {d.broker_id for d in secret_broker_device}
    assert decryptions.call_count == 0
    # Only a connection (the secret's use) decrypts, and only that broker's.
    (tenant_broker,) = [b for b in brokers if not b.is_platform]
    assert tenant_broker.password == BROKER_PASSWORD
    assert decryptions.call_count == 1


def test_broker_list_and_secret_status_decrypt_nothing(alice, broker_a, decryptions):
    assert api_client(alice).get("/api/v1/brokers/").status_code == 200
    assert broker_secrets_status(broker=Broker.objects.get(pk=broker_a.pk)) == {
        "username": True,
        "password": True,
    }
    assert decryptions.call_count == 0


def test_a_state_read_with_a_stale_key_answers(victor, login, secret_device, settings):
    """The key that encrypted the password is gone: state and lists still answer,
    only using the password fails loudly."""
    stranger = Fernet(Fernet.generate_key()).encrypt(b"lost").decode()
    write_raw_column(Device, "mqtt_password", secret_device.pk, stranger)
    client = api_client(victor)
    assert client.get(f"/api/v1/devices/{secret_device.code}/state/").status_code == 200
    pool = secret_device.pool.code
    assert client.get(f"/api/v1/pools/{pool}/state/").status_code == 200
    assert login(victor).get(reverse("devices")).status_code == 200
    with pytest.raises(fields.SecretDecryptionError):
        _ = Device.objects.get(pk=secret_device.pk).mqtt_password


def test_saving_an_unread_secret_keeps_its_token(secret_device, decryptions):
    from devices.tests.test_secrets import raw_column

    before = raw_column(Device, "mqtt_password", secret_device.pk)
    device = Device.objects.get(pk=secret_device.pk)
    device.online = True
    device.save()
    assert raw_column(Device, "mqtt_password", secret_device.pk) == before
    assert decryptions.call_count == 0
    assert repr(device.__dict__["mqtt_password"]) == "<sealed Device.mqtt_password>"
    assert Device.objects.get(pk=device.pk).mqtt_password == DEVICE_PASSWORD
