"""What the alerts API reads and writes. A webhook's secret is accepted on create
(and when replaced) and never returned."""

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from alerts.models import Alert, AlertRule, Delivery, Kind, WebhookSubscription
from alerts.services import WEBHOOK_SECRET_MAX, WEBHOOK_SECRET_MIN


class AlertSerializer(serializers.ModelSerializer):
    pool = serializers.SerializerMethodField(help_text="The pool's code.")
    pool_name = serializers.CharField(
        source="where", read_only=True, help_text="The pool's name (or the tenant's)."
    )
    label = serializers.CharField(source="get_kind_display", read_only=True)
    acknowledged_by = serializers.SerializerMethodField(
        help_text="E-mail of the member who acknowledged it first, or null."
    )

    class Meta:
        model = Alert
        fields = [
            "code",
            "pool",
            "pool_name",
            "kind",
            "label",
            "state",
            "value",
            "threshold",
            "fired_at",
            "resolved_at",
            "acknowledged_by",
            "acknowledged_at",
        ]
        read_only_fields = fields

    @extend_schema_field(serializers.UUIDField())
    def get_pool(self, alert) -> str | None:
        return str(alert.pool.code) if alert.pool_id else None

    @extend_schema_field(serializers.EmailField(allow_null=True))
    def get_acknowledged_by(self, alert) -> str | None:
        if alert.acknowledged_by_id and alert.acknowledged_by:
            return alert.acknowledged_by.email
        return None


class DeliverySerializer(serializers.ModelSerializer):
    webhook = serializers.SerializerMethodField(
        help_text="The subscription's code (null for e-mail or a deleted webhook)."
    )

    class Meta:
        model = Delivery
        fields = [
            "event",
            "channel",
            "recipient",
            "webhook",
            "status",
            "held_until",
            "attempt",
            "status_code",
            "ok",
            "error",
            "at",
        ]
        read_only_fields = fields

    @extend_schema_field(serializers.UUIDField(allow_null=True))
    def get_webhook(self, delivery) -> str | None:
        return str(delivery.webhook.code) if delivery.webhook_id else None


class WebhookSerializer(serializers.ModelSerializer):
    """A subscription as it is read: never its secret."""

    class Meta:
        model = WebhookSubscription
        fields = ["code", "url", "enabled", "created_at"]
        read_only_fields = fields


class WebhookWriteSerializer(serializers.Serializer):
    url = serializers.CharField(
        max_length=500,
        help_text="http(s) URL of your receiver; internal addresses are refused.",
    )
    secret = serializers.CharField(
        min_length=WEBHOOK_SECRET_MIN,
        max_length=WEBHOOK_SECRET_MAX,
        write_only=True,
        trim_whitespace=False,
        style={"input_type": "password"},
        help_text="Signing secret (write-only): HMAC-SHA256 key of the "
        "Poolsaas-Signature header. Never returned.",
    )
    enabled = serializers.BooleanField(required=False, default=True)


class WebhookUpdateSerializer(serializers.Serializer):
    url = serializers.CharField(max_length=500, required=False)
    secret = serializers.CharField(
        min_length=WEBHOOK_SECRET_MIN,
        max_length=WEBHOOK_SECRET_MAX,
        write_only=True,
        required=False,
        trim_whitespace=False,
        style={"input_type": "password"},
        help_text="A new signing secret (write-only); omitted keeps the stored one.",
    )
    enabled = serializers.BooleanField(required=False)


class RuleSerializer(serializers.ModelSerializer):
    pool = serializers.SerializerMethodField(
        help_text="The pool's code for a pool's override, null for a tenant default."
    )

    class Meta:
        model = AlertRule
        fields = [
            "code",
            "kind",
            "pool",
            "enabled",
            "threshold",
            "hysteresis",
            "renotify_minutes",
        ]
        read_only_fields = fields

    @extend_schema_field(serializers.UUIDField(allow_null=True))
    def get_pool(self, rule) -> str | None:
        return str(rule.pool.code) if rule.pool_id else None


class RuleNumbersSerializer(serializers.Serializer):
    """The numbers of a rule; their ranges per kind are the service's (a clear
    field error names them)."""

    threshold = serializers.FloatField(
        help_text="In the kind's unit: °C (water_above, water_below, freeze_risk), "
        "minutes (device_offline, command_failed), hours a day (pump_runtime), "
        "switches a day (relay_switches)."
    )
    hysteresis = serializers.FloatField(required=False, default=1.0)
    renotify_minutes = serializers.IntegerField(required=False, default=0)
    enabled = serializers.BooleanField(required=False, default=True)


class RuleCreateSerializer(RuleNumbersSerializer):
    kind = serializers.ChoiceField(choices=Kind.choices)
    pool = serializers.UUIDField(
        required=False,
        allow_null=True,
        help_text="A pool's code for its override; omitted or null: the default.",
    )
