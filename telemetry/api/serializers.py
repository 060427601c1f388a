"""API shapes of the pool's history: the query, one bucket, the answer."""

from rest_framework import serializers


class TelemetryQuerySerializer(serializers.Serializer):
    start = serializers.DateTimeField(
        required=False, help_text="ISO 8601; default 24 hours before `end`."
    )
    end = serializers.DateTimeField(required=False, help_text="ISO 8601; default now.")
    resolution = serializers.IntegerField(
        required=False,
        min_value=60,
        max_value=86400,
        help_text="Bucket size in seconds; default: the smallest of 1 min, 5 min, "
        "15 min, 1 h, 6 h, 1 day that gives at most 1000 buckets.",
    )


class TelemetryBucketSerializer(serializers.Serializer):
    start = serializers.DateTimeField()
    samples = serializers.IntegerField()
    temperature_avg = serializers.FloatField(allow_null=True)
    temperature_min = serializers.FloatField(allow_null=True)
    temperature_max = serializers.FloatField(allow_null=True)
    pump_on = serializers.FloatField(
        allow_null=True, help_text="Share of samples with the pump on (0..1)."
    )
    mode1 = serializers.FloatField(allow_null=True)
    mode2 = serializers.FloatField(allow_null=True)


class TelemetrySerializer(serializers.Serializer):
    pool = serializers.CharField()
    start = serializers.DateTimeField()
    end = serializers.DateTimeField()
    resolution = serializers.IntegerField()
    buckets = TelemetryBucketSerializer(many=True)
