from rest_framework import serializers

from audit.models import AuditEvent


class AuditEventSerializer(serializers.ModelSerializer):
    actor = serializers.CharField(source="actor_label", read_only=True)
    data = serializers.JSONField(read_only=True)

    class Meta:
        model = AuditEvent
        fields = [
            "code",
            "seq",
            "created_at",
            "action",
            "actor",
            "target_type",
            "target_code",
            "target_label",
            "data",
            "ip",
            "source",
            "request_id",
        ]
        read_only_fields = fields
