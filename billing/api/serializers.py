"""API shapes of usage and invoices."""

from rest_framework import serializers

from billing.models import Invoice, InvoiceLine


class UsageKindSerializer(serializers.Serializer):
    kind = serializers.CharField(help_text="messages_in, api_calls, commands_out:api…")
    label = serializers.CharField()
    used = serializers.IntegerField(help_text="Counted so far this period.")
    limit = serializers.IntegerField(
        allow_null=True, help_text="The plan's monthly limit; null: not limited."
    )
    percent = serializers.FloatField(allow_null=True)


class PlanLimitSerializer(serializers.Serializer):
    limit = serializers.CharField(help_text="pools, devices, members, messages…")
    name = serializers.CharField(help_text="The limit in words.")
    used = serializers.IntegerField()
    allowed = serializers.IntegerField()
    percent = serializers.IntegerField()


class UsageSerializer(serializers.Serializer):
    period_start = serializers.DateField()
    period_end = serializers.DateField(help_text="Exclusive.")
    plan = serializers.CharField(allow_null=True, help_text="The plan's code.")
    limits = PlanLimitSerializer(many=True, help_text="Empty without a plan.")
    kinds = UsageKindSerializer(many=True)


class InvoiceLineSerializer(serializers.ModelSerializer):
    class Meta:
        model = InvoiceLine
        fields = [
            "position",
            "kind",
            "description",
            "usage_kind",
            "quantity",
            "unit",
            "unit_price_cents",
            "amount_cents",
            "period_start",
            "period_end",
        ]


class InvoiceSerializer(serializers.ModelSerializer):
    corrects = serializers.SlugRelatedField(
        slug_field="code", read_only=True, allow_null=True
    )

    class Meta:
        model = Invoice
        fields = [
            "code",
            "number",
            "kind",
            "status",
            "period_start",
            "period_end",
            "issued_at",
            "billed_to",
            "currency",
            "total_cents",
            "amount_paid_cents",
            "paid_at",
            "corrects",
            "reason",
        ]
        read_only_fields = fields


class InvoiceDetailSerializer(InvoiceSerializer):
    lines = InvoiceLineSerializer(many=True, read_only=True)

    class Meta(InvoiceSerializer.Meta):
        fields = [*InvoiceSerializer.Meta.fields, "lines"]
        read_only_fields = fields
