import re
import uuid

from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator, RegexValidator
from django.db import models

from devices.fields import StrictEncryptedCharField

DEVICE_ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
NATIVE_DEVICE_ID_RE = re.compile(r"^ESP-[0-9A-F]{6}$")
TOPIC_PREFIX_RE = re.compile(r"^[A-Za-z0-9_-]+(/[A-Za-z0-9_-]+)*$")

validate_device_id = RegexValidator(
    DEVICE_ID_RE,
    "A device id is 1 to 64 letters, digits, '-' or '_' (for example ESP-A1B2C3).",
)
validate_topic_prefix = RegexValidator(
    TOPIC_PREFIX_RE,
    "A topic prefix is one or more levels of letters, digits, '-' or '_', "
    "separated by '/', without wildcards (for example devices or acme/pools).",
)


class Broker(models.Model):
    """An MQTT broker that devices connect to.

    The platform broker has no tenant and is shared; a tenant may bring its own.
    Username and password are encrypted at rest and decrypted only by the bridge.
    """

    code = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    tenant = models.ForeignKey(
        "tenants.Tenant",
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="brokers",
        help_text="Empty for the platform broker.",
    )
    is_platform = models.BooleanField(default=False, editable=False)
    name = models.CharField(max_length=80)
    host = models.CharField(max_length=253)
    port = models.PositiveIntegerField(
        default=8883, validators=[MinValueValidator(1), MaxValueValidator(65535)]
    )
    use_tls = models.BooleanField("TLS", default=True)
    ca_certificate = models.TextField(
        "CA certificate",
        blank=True,
        help_text="PEM of the CA that signed the broker's certificate; empty to use "
        "the system's trusted CAs.",
    )
    websocket_url = models.CharField(
        "WebSocket URL", max_length=300, blank=True, help_text="wss://host:port/mqtt"
    )
    username = StrictEncryptedCharField(max_length=200, blank=True)
    password = StrictEncryptedCharField(max_length=200, blank=True)
    topic_prefix = models.CharField(
        max_length=100, default="devices", validators=[validate_topic_prefix]
    )
    secrets_changed_at = models.DateTimeField(null=True, blank=True, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.UniqueConstraint(
                fields=["is_platform"],
                condition=models.Q(is_platform=True),
                name="broker_single_platform",
            ),
            models.CheckConstraint(
                condition=models.Q(is_platform=True, tenant__isnull=True)
                | models.Q(is_platform=False, tenant__isnull=False),
                name="broker_platform_has_no_tenant",
            ),
        ]

    def __str__(self) -> str:
        return self.name

    def clean(self):
        if self.ca_certificate and "BEGIN CERTIFICATE" not in self.ca_certificate:
            raise ValidationError(
                {"ca_certificate": "Paste a PEM certificate (-----BEGIN CERTIFICATE-----)."}
            )


class Pool(models.Model):
    """A swimming pool of a tenant, watched and switched through its controller."""

    code = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    tenant = models.ForeignKey(
        "tenants.Tenant", on_delete=models.CASCADE, related_name="pools"
    )
    name = models.CharField(max_length=120)
    timezone = models.CharField(
        max_length=64,
        default="Europe/Madrid",
        help_text="Programs and the manual-override pause follow this time zone.",
    )
    mode1_name = models.CharField("valve mode 1 name", max_length=40, default="Cascada")
    mode2_name = models.CharField(
        "valve mode 2 name", max_length=40, default="Eyectores"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]
        indexes = [models.Index(fields=["tenant", "name"])]

    def __str__(self) -> str:
        return self.name


class Device(models.Model):
    """A pool controller: our MicroPython firmware (ps1) or a v3.1 device in the field.

    Its MQTT identity is (broker, topic prefix, device id); the bridge maps every
    message to exactly one device, and so to exactly one tenant, through it.
    """

    class Protocol(models.TextChoices):
        POOLSAAS = "ps1", "poolsaas firmware"
        LEGACY = "v3.1", "v3.1 (legacy)"

    code = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    tenant = models.ForeignKey(
        "tenants.Tenant", on_delete=models.CASCADE, related_name="devices"
    )
    device_id = models.CharField(
        "device id", max_length=64, validators=[validate_device_id]
    )
    pool = models.OneToOneField(
        Pool,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="device",
    )
    broker = models.ForeignKey(Broker, on_delete=models.PROTECT, related_name="devices")
    topic_prefix = models.CharField(
        max_length=100, default="devices", validators=[validate_topic_prefix]
    )
    protocol = models.CharField(
        max_length=8, choices=Protocol, default=Protocol.POOLSAAS
    )
    # Per-device credentials on the platform broker (dynamic security).
    mqtt_password = StrictEncryptedCharField(max_length=200, blank=True)
    # Last known state, kept by the bridge.
    online = models.BooleanField(default=False)
    last_seen_at = models.DateTimeField(null=True, blank=True)
    state = models.JSONField(default=dict, blank=True)
    firmware_version = models.CharField(max_length=40, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["device_id"]
        constraints = [
            models.UniqueConstraint(
                fields=["broker", "topic_prefix", "device_id"],
                name="device_unique_mqtt_identity",
            )
        ]
        indexes = [models.Index(fields=["tenant", "device_id"])]

    def __str__(self) -> str:
        return self.device_id

    @property
    def topic_root(self) -> str:
        return f"{self.topic_prefix}/{self.device_id}"
