"""Lists and reads served as rows (poolsaas.api.rows) answer exactly what their
serializer answers from model instances: every serializer read this way is checked
here on varied data, in a time zone other than UTC, and through the API."""

import datetime as dt

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.utils import timezone
from rest_framework import serializers

from devices.api.serializers import DeviceStateSerializer, PoolSerializer
from devices.models import Device, Pool
from poolsaas.api.rows import RowReader, row_reader
from poolsaas.api.testing import api_client

MOMENT = dt.datetime(2026, 7, 1, 12, 30, 15, 123456, tzinfo=dt.UTC)


@pytest.fixture
def varied(tenant_a, platform_broker):
    """Pools with and without a device, nulls and values in every nullable field."""
    lone = Pool.objects.create(tenant=tenant_a, name="Lone", override_until=MOMENT)
    full = Pool.objects.create(
        tenant=tenant_a, name="Full", timezone="America/New_York", config_version=7
    )
    device = Device.objects.create(
        tenant=tenant_a,
        pool=full,
        broker=platform_broker,
        topic_prefix="rows",
        device_id="ESP-ROWS01",
        online=True,
        last_seen_at=MOMENT,
        state={"pump": True, "temperature": 26.5, "wifi": {"rssi": -61}},
        firmware_version="1.2.3",
        hardware_model="esp32s3",
        config_version_applied=7,
        mqtt_password="a secret that is never read",
    )
    unplaced = Device.objects.create(
        tenant=tenant_a,
        pool=None,
        broker=platform_broker,
        topic_prefix="rows",
        device_id="ESP-ROWS02",
    )
    return lone, full, device, unplaced


@pytest.mark.parametrize("zone", ["UTC", "Europe/Madrid", "Asia/Kolkata"])
def test_pool_rows_equal_the_serializer(varied, zone):
    pools = Pool.objects.filter(pk__in=[p.pk for p in varied[:2]]).order_by("name")
    reader = row_reader(PoolSerializer)
    with timezone.override(zone):
        expected = PoolSerializer(pools.select_related("device"), many=True).data
        got = reader.represent(pools.values(*reader.paths))
    assert got == [dict(item) for item in expected]
    assert got[1]["device"] is None and got[1]["override_until"] is not None
    assert got[0]["device"]["last_seen_at"] is not None


@pytest.mark.parametrize("zone", ["UTC", "Europe/Madrid"])
def test_device_state_rows_equal_the_serializer(varied, zone):
    reader = row_reader(DeviceStateSerializer)
    for device in varied[2:]:
        with timezone.override(zone):
            expected = dict(DeviceStateSerializer(device).data)
            row = Device.objects.filter(pk=device.pk).values(*reader.paths).get()
            assert reader.represent_one(row) == expected
    assert reader.represent_one(row)["pool"] is None  # the unplaced device


def test_the_api_answers_the_serializers_json(alice, varied):
    client = api_client(alice)
    listed = client.get("/api/v1/pools/").json()["results"]
    with timezone.override("UTC"):
        pools = Pool.objects.filter(tenant=varied[0].tenant).select_related("device")
        expected = PoolSerializer(pools.order_by("name"), many=True).data
    assert listed == [dict(item) for item in expected]
    device = varied[2]
    state = client.get(f"/api/v1/devices/{device.code}/state/").json()
    assert state == {
        "device": device.code.hex,
        "pool": varied[1].code.hex,
        "online": True,
        "last_seen_at": "2026-07-01T12:30:15.123456Z",
        "state": {"pump": True, "temperature": 26.5, "wifi": {"rssi": -61}},
        "firmware_version": "1.2.3",
        "hardware_model": "esp32s3",
        "config_version_applied": 7,
    }


class _Method(serializers.ModelSerializer):
    extra = serializers.SerializerMethodField()

    class Meta:
        model = Pool
        fields = ["name", "extra"]

    def get_extra(self, pool):
        return 1


class _Dotted(serializers.ModelSerializer):
    device = serializers.CharField(source="device.device_id", read_only=True)

    class Meta:
        model = Pool
        fields = ["device"]


class _Formatted(serializers.ModelSerializer):
    created_at = serializers.DateTimeField(format="%Y", read_only=True)

    class Meta:
        model = Pool
        fields = ["created_at"]


@pytest.mark.parametrize("serializer", [_Method, _Dotted, _Formatted])
def test_a_field_not_read_from_a_column_is_refused(serializer):
    with pytest.raises(ImproperlyConfigured):
        RowReader(serializer)
