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
    # Rotation without downtime (devices/services/brokers/credentials.py): staged
    # credentials, tried first by the bridge and promoted when the broker takes them.
    pending_username = StrictEncryptedCharField(max_length=200, blank=True)
    pending_password = StrictEncryptedCharField(max_length=200, blank=True)
    # Identifies the staged pair: the bridge promotes only the pair it tried.
    credentials_pending_since = models.DateTimeField(
        null=True, blank=True, editable=False
    )
    credentials_rotated_at = models.DateTimeField(null=True, blank=True, editable=False)
    credentials_refused_at = models.DateTimeField(null=True, blank=True, editable=False)
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
                {
                    "ca_certificate": "Paste a PEM certificate "
                    "(-----BEGIN CERTIFICATE-----)."
                }
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
    # A manual action pauses programs until local midnight (stored as UTC instant).
    override_until = models.DateTimeField(null=True, blank=True)
    # Bumped on every change of programs or thresholds; ps1 devices report what they
    # applied in config/applied, kept on the device as config_version_applied.
    config_version = models.PositiveIntegerField(default=0)
    settings = models.JSONField(
        default=dict,
        blank=True,
        help_text="Thresholds and telemetry interval pushed to the device.",
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
    # The dynamic-security username of `mqtt_password`; empty means the device id
    # (every device until its first rotation, then `<device id>~<generation>`).
    mqtt_username = models.CharField(max_length=80, blank=True, editable=False)
    # Rotation of the platform credentials (devices/services/device_credentials.py).
    credentials_generation = models.PositiveIntegerField(default=0, editable=False)
    pending_mqtt_username = StrictEncryptedCharField(max_length=200, blank=True)
    pending_mqtt_password = StrictEncryptedCharField(max_length=200, blank=True)
    # The cmd id of the pending rotation, `k<generation>-<8 hex>`; empty when none.
    credentials_rotation_id = models.CharField(
        max_length=40, blank=True, editable=False
    )
    credentials_rotation_started_at = models.DateTimeField(
        null=True, blank=True, editable=False
    )
    credentials_rotated_at = models.DateTimeField(null=True, blank=True, editable=False)
    credentials_rotation_failed_at = models.DateTimeField(
        null=True, blank=True, editable=False
    )
    credentials_rotation_failure = models.CharField(
        max_length=200, blank=True, editable=False
    )
    # When the tenant proved it holds the device with its claim code (platform broker
    # only; devices/services/claims.py). Rows from before claims have none: a valid
    # claim by another tenant releases them.
    claimed_at = models.DateTimeField(null=True, blank=True, editable=False)
    # Last known state, kept by the bridge.
    online = models.BooleanField(default=False)
    last_seen_at = models.DateTimeField(null=True, blank=True)
    state = models.JSONField(default=dict, blank=True)
    firmware_version = models.CharField(max_length=40, blank=True)
    # The board's model as its telemetry names it (`hw`, OTA releases' model); empty
    # until a firmware that reports one is heard from, and always for v3.1 devices.
    hardware_model = models.CharField(max_length=40, blank=True)
    config_version_applied = models.PositiveIntegerField(null=True, blank=True)
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

    @property
    def mqtt_login(self) -> str:
        """The username the device logs in with on the platform broker."""
        return self.mqtt_username or self.device_id


class Command(models.Model):
    """A command to a device, from any entry point (page, socket, API, scheduler).

    Created pending by devices.commands.command_send; the bridge publishes it and
    completes it on the device's acknowledgement (ps1) or on the retained state topic
    showing the requested value (v3.1); unanswered, it times out into a failure.
    """

    class Op(models.TextChoices):
        PUMP = "pump", "Pump"
        VALVE = "valve", "Valve"
        TIMER = "timer", "Timer"
        WIFI_CLEAR = "wifi_clear", "Wi-Fi reset"
        OVERRIDE_CLEAR = "override_clear", "Resume programs"
        REBOOT = "reboot", "Reboot"

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        SENT = "sent", "Sent"
        DONE = "done", "Done"
        FAILED = "failed", "Failed"
        TIMED_OUT = "timed_out", "Timed out"

    code = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    tenant = models.ForeignKey(
        "tenants.Tenant", on_delete=models.CASCADE, related_name="commands"
    )
    device = models.ForeignKey(
        Device, on_delete=models.CASCADE, related_name="commands"
    )
    pool = models.ForeignKey(
        Pool, null=True, blank=True, on_delete=models.SET_NULL, related_name="commands"
    )
    actor = models.ForeignKey(
        "tenants.User",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="commands",
    )
    source = models.CharField(max_length=12, default="web")
    op = models.CharField(max_length=16, choices=Op)
    value = models.JSONField(null=True, blank=True)
    status = models.CharField(
        max_length=10, choices=Status, default=Status.PENDING, db_index=True
    )
    error = models.CharField(max_length=300, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    sent_at = models.DateTimeField(null=True, blank=True)
    completed_at = models.DateTimeField(null=True, blank=True)
    expires_at = models.DateTimeField()
    # v3.1 commands complete when the device reports this: {"kind": "pump", "value":
    # true}; fixed at send time so that TOGGLE means "the opposite of what it was".
    expected = models.JSONField(null=True, blank=True, editable=False)
    # The bridge process (its `instance`, one per start) whose claim made it sent,
    # and how many claims it had: more than one when a live bridge re-sent it after
    # its claimer died (devices.services.commands.commands_reclaim).
    claimed_by = models.CharField(max_length=32, blank=True, editable=False)
    claims = models.PositiveSmallIntegerField(default=0, editable=False)

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            models.Index(fields=["device", "status"]),
            models.Index(fields=["tenant", "-created_at"]),
        ]

    def __str__(self) -> str:
        return f"{self.op} {self.value} → {self.device_id}"

    @property
    def is_final(self) -> bool:
        return self.status in (
            self.Status.DONE,
            self.Status.FAILED,
            self.Status.TIMED_OUT,
        )


class DeviceEvent(models.Model):
    """The pool's event log: device events, commands, program runs, overrides,
    online/offline changes."""

    code = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    tenant = models.ForeignKey(
        "tenants.Tenant", on_delete=models.CASCADE, related_name="+"
    )
    device = models.ForeignKey(
        Device, null=True, blank=True, on_delete=models.CASCADE, related_name="events"
    )
    pool = models.ForeignKey(
        Pool, null=True, blank=True, on_delete=models.CASCADE, related_name="events"
    )
    ts = models.DateTimeField()
    kind = models.CharField(max_length=30)
    message = models.CharField(max_length=300, blank=True)
    data = models.JSONField(default=dict, blank=True)
    actor = models.ForeignKey(
        "tenants.User",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )

    class Meta:
        ordering = ["-ts"]
        indexes = [
            models.Index(fields=["pool", "-ts"]),
            models.Index(fields=["device", "-ts"]),
        ]

    def __str__(self) -> str:
        return f"{self.kind} @ {self.ts}"


class Program(models.Model):
    """One of a pool's up to 3 weekly programs (slot 1 beats 2 beats 3).

    `days` holds 7 entries, Monday first, each null or
    {"mode": 1|2, "start": "HH:MM", "stop": "HH:MM"}. The server is the source of
    truth; ps1 devices get them as retained configuration, v3.1 pools are run by the
    server-side scheduler.
    """

    code = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    tenant = models.ForeignKey(
        "tenants.Tenant", on_delete=models.CASCADE, related_name="+"
    )
    pool = models.ForeignKey(Pool, on_delete=models.CASCADE, related_name="programs")
    slot = models.PositiveSmallIntegerField(
        validators=[MinValueValidator(1), MaxValueValidator(3)]
    )
    enabled = models.BooleanField(default=True)
    days = models.JSONField(default=list)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["pool", "slot"]
        constraints = [
            models.UniqueConstraint(fields=["pool", "slot"], name="program_unique_slot")
        ]

    def __str__(self) -> str:
        return f"{self.pool} program {self.slot}"


class BrokerLease(models.Model):
    """Which bridge holds a broker that only one bridge may connect to (a tenant's own,
    or the platform's without shared subscriptions). The holder renews it well before
    `expires_at`; past that, any bridge may take it with a conditional UPDATE
    (devices.services.leases). Times are the database's, so bridges on hosts whose
    clocks differ still agree."""

    broker = models.OneToOneField(
        Broker, on_delete=models.CASCADE, primary_key=True, related_name="lease"
    )
    holder = models.CharField(max_length=100, blank=True)
    expires_at = models.DateTimeField()

    def __str__(self) -> str:
        return f"{self.broker_id} held by {self.holder or 'nobody'}"


class BridgePresence(models.Model):
    """A running bridge, renewed with its leases: the bridges alive now share the
    leased brokers between them (devices.services.leases). Its heartbeat (`instance`,
    the process start that runs under this name, alive until `beat_until`) tells
    whether the claimer of a sent command is still there
    (devices.services.commands.commands_reclaim)."""

    name = models.CharField(max_length=100, primary_key=True)
    expires_at = models.DateTimeField()
    instance = models.CharField(max_length=32, blank=True, db_index=True)
    beat_until = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return self.name
