"""API shapes for brokers, pools, devices, commands, programs and events (the history's
are in telemetry/api/serializers.py).

Read serializers show; write serializers only parse input for a service. Broker and
device secrets are write-only: no read serializer has a field for them.
"""

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from devices.models import Broker, Command, Device, DeviceEvent, Pool


class DeviceSummarySerializer(serializers.ModelSerializer):
    class Meta:
        model = Device
        fields = [
            "code",
            "device_id",
            "protocol",
            "online",
            "last_seen_at",
            "firmware_version",
            "hardware_model",
        ]
        read_only_fields = fields


class PoolSerializer(serializers.ModelSerializer):
    # A nested field (built once per list), not a method field that would build a
    # serializer per row; a pool without a device reads as null.
    device = DeviceSummarySerializer(read_only=True, allow_null=True)

    class Meta:
        model = Pool
        fields = [
            "code",
            "name",
            "timezone",
            "mode1_name",
            "mode2_name",
            "override_until",
            "config_version",
            "created_at",
            "device",
        ]
        read_only_fields = fields


class PoolWriteSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=120)
    timezone = serializers.CharField(max_length=64, required=False)
    mode1_name = serializers.CharField(max_length=40, required=False)
    mode2_name = serializers.CharField(max_length=40, required=False)

    def service_kwargs(self) -> dict:
        data = dict(self.validated_data)
        if "timezone" in data:
            data["timezone_name"] = data.pop("timezone")
        return data


class BrokerRotationSerializer(serializers.Serializer):
    """A broker's credential rotation (never the credentials)."""

    pending = serializers.BooleanField(help_text="New credentials are staged.")
    pending_since = serializers.DateTimeField(allow_null=True)
    refused_at = serializers.DateTimeField(
        allow_null=True,
        help_text="When the broker refused the staged credentials (the old ones "
        "are still used); null unless refused.",
    )
    rotated_at = serializers.DateTimeField(
        allow_null=True, help_text="When staged credentials were last promoted."
    )


class BrokerRotateSerializer(serializers.Serializer):
    username = serializers.CharField(
        max_length=200,
        required=False,
        allow_blank=True,
        default="",
        write_only=True,
        trim_whitespace=False,
        help_text="Empty or absent keeps the current username.",
    )
    password = serializers.CharField(
        max_length=200,
        write_only=True,
        trim_whitespace=False,
        style={"input_type": "password"},
    )


class DeviceRotationSerializer(serializers.Serializer):
    """A device's credential rotation on the platform broker (never the secret)."""

    pending = serializers.BooleanField()
    started_at = serializers.DateTimeField(allow_null=True)
    expires_at = serializers.DateTimeField(allow_null=True)
    confirmed_at = serializers.DateTimeField(allow_null=True)
    failed_at = serializers.DateTimeField(allow_null=True)
    failure = serializers.CharField(allow_blank=True)


class BrokerSerializer(serializers.ModelSerializer):
    credentials_set = serializers.SerializerMethodField(
        help_text="Whether a username or password is stored (never shown)."
    )
    credentials_rotation = serializers.SerializerMethodField()

    class Meta:
        model = Broker
        fields = [
            "code",
            "name",
            "host",
            "port",
            "use_tls",
            "ca_certificate",
            "websocket_url",
            "topic_prefix",
            "credentials_set",
            "credentials_rotation",
            "secrets_changed_at",
            "created_at",
            "updated_at",
        ]
        read_only_fields = fields

    @extend_schema_field(BrokerRotationSerializer)
    def get_credentials_rotation(self, broker) -> dict:
        from devices.services.brokers import broker_credentials_state

        return BrokerRotationSerializer(broker_credentials_state(broker=broker)).data

    def get_credentials_set(self, broker) -> bool:
        # What is stored now, not whether it ever changed: cleared credentials
        # (username and password set to "") are not "set".
        from devices.fields import SecretDecryptionError
        from devices.services.brokers import broker_secrets_status

        try:
            return any(broker_secrets_status(broker=broker).values())
        except SecretDecryptionError:
            # Something is stored, only not readable with the current keys.
            return True


class BrokerWriteSerializer(serializers.Serializer):
    """Settings plus write-only secrets; on update an omitted secret is kept."""

    name = serializers.CharField(max_length=80)
    host = serializers.CharField(max_length=253)
    port = serializers.IntegerField(min_value=1, max_value=65535, required=False)
    use_tls = serializers.BooleanField(required=False)
    ca_certificate = serializers.CharField(
        required=False, allow_blank=True, trim_whitespace=False
    )
    websocket_url = serializers.CharField(
        max_length=300, required=False, allow_blank=True
    )
    topic_prefix = serializers.CharField(max_length=100, required=False)
    username = serializers.CharField(
        max_length=200, required=False, allow_blank=True, write_only=True
    )
    password = serializers.CharField(
        max_length=200,
        required=False,
        allow_blank=True,
        write_only=True,
        trim_whitespace=False,
        style={"input_type": "password"},
    )


class DeviceSerializer(serializers.ModelSerializer):
    pool = serializers.SerializerMethodField()
    broker = serializers.SerializerMethodField()
    credentials_rotation = serializers.SerializerMethodField()

    class Meta:
        model = Device
        fields = [
            "code",
            "device_id",
            "pool",
            "broker",
            "topic_prefix",
            "protocol",
            "online",
            "last_seen_at",
            "firmware_version",
            "hardware_model",
            "config_version_applied",
            "credentials_rotation",
            "created_at",
        ]
        read_only_fields = fields

    @extend_schema_field(DeviceRotationSerializer)
    def get_credentials_rotation(self, device) -> dict:
        from devices.services.device_credentials import device_credentials_state

        return DeviceRotationSerializer(device_credentials_state(device=device)).data

    def get_pool(self, device) -> str | None:
        return device.pool.code.hex if device.pool_id else None

    def get_broker(self, device) -> str | None:
        # The platform broker is shared: integrators see that, not its code.
        if device.broker.is_platform:
            return None
        return device.broker.code.hex


class DeviceCreateSerializer(serializers.Serializer):
    pool = serializers.UUIDField(help_text="Code of the pool the device controls.")
    device_id = serializers.CharField(max_length=64)
    # Text, not a UUID field: which codes are accepted is the service's one rule
    # (devices.services.onboarding.device_broker_choose), the same as the page's.
    broker = serializers.CharField(
        required=False,
        allow_null=True,
        allow_blank=True,
        max_length=64,
        help_text="Code of the platform broker or of one of your brokers; empty or "
        "absent for the platform broker (the default).",
    )
    protocol = serializers.ChoiceField(
        choices=Device.Protocol.choices, default=Device.Protocol.POOLSAAS
    )
    claim_code = serializers.CharField(
        max_length=40,
        required=False,
        allow_blank=True,
        default="",
        help_text="Required on the platform broker: the code on the device's label "
        "and its set-up page (XXXX-XXXX-XXXX), proof that you hold the device.",
    )


class BundleMqttSerializer(serializers.Serializer):
    host = serializers.CharField()
    port = serializers.IntegerField()
    tls = serializers.BooleanField()
    username = serializers.CharField()
    password = serializers.CharField()
    prefix = serializers.CharField()


class BundleSerializer(serializers.Serializer):
    v = serializers.IntegerField()
    device_id = serializers.CharField()
    auth = serializers.ChoiceField(
        choices=["device", "none"],
        help_text='"device": the password is the device\'s own, shown this once; '
        '"none": the broker issues no per-device credentials (password empty).',
    )
    mqtt = BundleMqttSerializer()
    ca = serializers.CharField(required=False)


class DeviceCreatedSerializer(DeviceSerializer):
    bundle = serializers.SerializerMethodField(
        help_text="The provisioning bundle, shown this once (its password is stored "
        "only encrypted); null for devices that bring their own credentials."
    )

    class Meta(DeviceSerializer.Meta):
        fields = [*DeviceSerializer.Meta.fields, "bundle"]
        read_only_fields = fields

    @extend_schema_field(BundleSerializer(allow_null=True))
    def get_bundle(self, device):
        return self.context.get("bundle")


class DeviceStateSerializer(serializers.ModelSerializer):
    # Columns only: the state is read as a row (poolsaas.api.rows).
    device = serializers.UUIDField(source="code", format="hex", read_only=True)
    pool = serializers.UUIDField(
        source="pool.code", format="hex", read_only=True, allow_null=True
    )
    state = serializers.JSONField(
        read_only=True,
        help_text="pump, valve, timer, temperature, wifi, uptime, mem_free, "
        "switches, fw, updated_at (all optional).",
    )

    class Meta:
        model = Device
        fields = [
            "device",
            "pool",
            "online",
            "last_seen_at",
            "state",
            "firmware_version",
            "hardware_model",
            "config_version_applied",
        ]
        read_only_fields = fields


class CommandSerializer(serializers.ModelSerializer):
    pool = serializers.SerializerMethodField()
    actor = serializers.SerializerMethodField()
    value = serializers.JSONField(read_only=True)

    class Meta:
        model = Command
        fields = [
            "code",
            "pool",
            "op",
            "value",
            "status",
            "error",
            "actor",
            "source",
            "created_at",
            "sent_at",
            "completed_at",
            "expires_at",
        ]
        read_only_fields = fields

    def get_pool(self, command) -> str | None:
        return command.pool.code.hex if command.pool_id else None

    def get_actor(self, command) -> str | None:
        return command.actor.email if command.actor_id else None


class CommandCreateSerializer(serializers.Serializer):
    op = serializers.ChoiceField(choices=Command.Op.choices)
    value = serializers.JSONField(
        required=False,
        allow_null=True,
        help_text='pump: "ON" | "OFF" | "TOGGLE"; valve: 1 | 2 | "TOGGLE"; '
        'timer: {"mode": 1|2, "duration": 0..86400}; others: null.',
    )

    def validate(self, attrs):
        # The service checks values in full; this only keeps out numbers it would
        # try to convert and choke on ("²" passes str.isdigit, int() refuses it).
        value = attrs.get("value")
        if attrs["op"] == Command.Op.TIMER and isinstance(value, dict):
            for key in ("mode", "duration"):
                item = value.get(key)
                if isinstance(item, str) and not (
                    item.isascii() and item.isdigit() and len(item) <= 6
                ):
                    raise serializers.ValidationError(
                        {"value": [f"The timer's {key} must be a whole number."]}
                    )
        return attrs


class ProgramDaySerializer(serializers.Serializer):
    mode = serializers.IntegerField(min_value=1, max_value=2)
    start = serializers.CharField(help_text="HH:MM, local time of the pool")
    stop = serializers.CharField(help_text="HH:MM, after start")


class ProgramSerializer(serializers.Serializer):
    slot = serializers.IntegerField(min_value=1, max_value=3)
    enabled = serializers.BooleanField()
    days = serializers.ListField(
        child=ProgramDaySerializer(allow_null=True),
        min_length=7,
        max_length=7,
        help_text="Seven entries, Monday first; null for a day off.",
    )


class ProgramsSerializer(serializers.Serializer):
    version = serializers.IntegerField(
        read_only=True, help_text="The pool's configuration version (the ETag)."
    )
    programs = ProgramSerializer(many=True)


class DeviceEventSerializer(serializers.ModelSerializer):
    actor = serializers.SerializerMethodField()
    data = serializers.JSONField(read_only=True)

    class Meta:
        model = DeviceEvent
        fields = ["code", "ts", "kind", "message", "data", "actor"]
        read_only_fields = fields

    def get_actor(self, event) -> str | None:
        return event.actor.email if event.actor_id else None
