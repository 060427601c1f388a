"""The shared platform broker's row, kept in step with the settings."""

from urllib.parse import urlparse

from django.conf import settings

from devices.models import Broker


def broker_ensure_platform() -> Broker:
    """The shared platform broker row, kept in step with MQTT_URL."""
    url = urlparse(settings.MQTT_URL)
    host = url.hostname or "127.0.0.1"
    use_tls = url.scheme in ("mqtts", "ssl")
    port = url.port or (8883 if use_tls else 1883)
    wanted = {
        "tenant": None,
        "name": "poolsaas platform broker",
        "host": host,
        "port": port,
        "use_tls": use_tls,
        "username": settings.MQTT_USERNAME,
        "password": settings.MQTT_PASSWORD,
    }
    broker = Broker.objects.filter(is_platform=True).first()
    if broker is None:
        return Broker.objects.create(is_platform=True, **wanted)
    # Saved only when something differs: every save moves `updated_at`, which running
    # bridges read as "reconnect", so a bridge starting must not disturb the others.
    changed = [name for name, value in wanted.items() if getattr(broker, name) != value]
    if changed:
        for name in changed:
            setattr(broker, name, wanted[name])
        broker.save()
    return broker
