"""Staff admin of the telemetry history: read-only, and the samples' admin pages
moved with the model to the telemetry app."""

import pytest
from django.urls import reverse
from django.utils import timezone

from telemetry.models import TelemetrySample


@pytest.fixture
def staff_client(client, make_user):
    client.force_login(
        make_user("staff@poolsaas.test", is_staff=True, is_superuser=True)
    )
    return client


def test_samples_are_read_only(staff_client, device_a):
    sample = TelemetrySample.objects.create(
        tenant=device_a.tenant, device=device_a, ts=timezone.now(), temperature=25.0
    )
    changelist = reverse("admin:telemetry_telemetrysample_changelist")
    assert changelist == "/admin/telemetry/telemetrysample/"
    response = staff_client.get(changelist)
    assert response.status_code == 200
    assert device_a.device_id in response.content.decode()
    add = reverse("admin:telemetry_telemetrysample_add")
    assert staff_client.get(add).status_code == 403
    change = reverse("admin:telemetry_telemetrysample_change", args=[sample.pk])
    assert staff_client.get(change).status_code == 200  # view only
    assert staff_client.post(change, {"temperature": "30"}).status_code == 403
    delete = reverse("admin:telemetry_telemetrysample_delete", args=[sample.pk])
    assert staff_client.post(delete, {"post": "yes"}).status_code == 403
    assert TelemetrySample.objects.get(pk=sample.pk).temperature == 25.0
