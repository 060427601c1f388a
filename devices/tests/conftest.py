"""Fixtures shared by the devices tests: a tenant-A broker and a device that both hold
secrets. Tests import the constants to prove a secret never leaks (and survives)."""

import pytest

from devices.services.brokers import broker_create

BROKER_USER = "acme-mqtt-user-7Q"
BROKER_PASSWORD = "acme-Secret-Pa55-9xZ"
DEVICE_PASSWORD = "device-Secret-Pw-3Kd"


@pytest.fixture
def broker_a(alice):
    """Tenant A's own broker (TLS), with a username and password."""
    return broker_create(
        membership=alice,
        name="Acme broker",
        host="mqtt.acme.test",
        port=8883,
        use_tls=True,
        topic_prefix="acme",
        username=BROKER_USER,
        password=BROKER_PASSWORD,
    )


@pytest.fixture
def secret_device(device_a):
    """The root conftest's device of pool A, with its MQTT password set."""
    device_a.mqtt_password = DEVICE_PASSWORD
    device_a.save(update_fields=["mqtt_password"])
    return device_a
