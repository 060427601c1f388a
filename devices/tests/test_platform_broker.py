"""The platform broker row follows MQTT_URL, and is left alone when nothing changed:
every bridge calls broker_ensure_platform() when it starts, and running bridges
reconnect when the row's fingerprint moves (a second bridge starting once made the
first one drop its shared subscription mid-stream)."""

import pytest

from devices.bridge.connection import broker_fingerprint
from devices.models import Broker
from devices.services.brokers import broker_ensure_platform

pytestmark = pytest.mark.django_db


def test_ensuring_it_again_changes_nothing(settings):
    settings.MQTT_URL = "mqtt://127.0.0.1:1883"
    first = broker_ensure_platform()
    again = broker_ensure_platform()
    assert again.pk == first.pk
    assert Broker.objects.filter(is_platform=True).count() == 1
    assert broker_fingerprint(Broker.objects.get(pk=first.pk)) == broker_fingerprint(
        first
    )


def test_a_new_address_or_password_is_written(settings):
    settings.MQTT_URL = "mqtt://127.0.0.1:1883"
    first = broker_ensure_platform()
    settings.MQTT_URL = "mqtts://broker.example.com"
    settings.MQTT_PASSWORD = "new-bridge-password"
    moved = broker_ensure_platform()
    assert moved.pk == first.pk
    stored = Broker.objects.get(pk=first.pk)
    assert (stored.host, stored.port, stored.use_tls) == (
        "broker.example.com",
        8883,
        True,
    )
    assert stored.password == "new-bridge-password"
    assert broker_fingerprint(stored) != broker_fingerprint(first)
