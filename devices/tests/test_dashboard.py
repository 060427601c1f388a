"""The dashboard pages: pool page, programs editor, devices pages, pools overview.
For each: the happy path, a role too low (403), another tenant's object and a made-up
code (404), bad input (400, nothing changed), and query counts on list pages."""

import json
import uuid

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from devices.models import Device, Pool, Program


def snapshot_of(response) -> dict:
    html = response.content.decode()
    start = html.index('<script id="pool-snapshot" type="application/json">')
    body = html[start:].split(">", 1)[1].split("</script>", 1)[0]
    return json.loads(body)


# --- pool page --------------------------------------------------------------------


@pytest.fixture
def live_device(device_a):
    device_a.online = True
    device_a.state = {
        "pump": True,
        "valve": 2,
        "temperature": 26.4,
        "wifi": {"status": "connected", "ssid": "home", "rssi": -58},
        "timer": {"active": True, "remaining": 90, "mode": 2, "duration": 120},
        "uptime": 3600,
    }
    device_a.firmware_version = "ps1-0.1.0"
    device_a.save()
    return device_a


def test_pool_page_for_operator(login, olivia, live_device, pool_a):
    response = login(olivia).get(reverse("pool_detail", args=[pool_a.code]))
    assert response.status_code == 200
    html = response.content.decode()
    assert "Acme Main Pool" in html and "Cascada" in html and "Eyectores" in html
    assert "js/pool.js" in html
    snap = snapshot_of(response)
    assert snap["pool"]["code"] == pool_a.code.hex
    assert snap["device"]["state"]["temperature"] == 26.4
    assert snap["can_control"] is True


def test_pool_page_for_viewer_says_why_controls_are_off(login, victor, live_device):
    response = login(victor).get(reverse("pool_detail", args=[live_device.pool.code]))
    assert response.status_code == 200
    assert "You are a viewer" in response.content.decode()
    assert snapshot_of(response)["can_control"] is False


def test_pool_page_of_offline_device_says_so(login, olivia, device_a, pool_a):
    response = login(olivia).get(reverse("pool_detail", args=[pool_a.code]))
    assert "The device is offline" in response.content.decode()


def test_pool_page_uses_the_pools_mode_names(login, olivia, pool_a):
    pool_a.mode1_name, pool_a.mode2_name = "Waterfall", "Jets"
    pool_a.save()
    html = login(olivia).get(reverse("pool_detail", args=[pool_a.code])).content
    assert b"Waterfall" in html and b"Jets" in html and b"Cascada" not in html


@pytest.mark.parametrize("code", ["foreign", uuid.uuid4().hex, "not-a-code"])
def test_pool_page_foreign_or_made_up_is_404(login, carol, pool_a, pool_b, code):
    code = pool_a.code.hex if code == "foreign" else code
    response = login(carol).get(f"/pools/{code}/")
    assert response.status_code == 404
    assert b"Acme" not in response.content


def test_pool_page_needs_login(client, pool_a):
    response = client.get(reverse("pool_detail", args=[pool_a.code]))
    assert response.status_code == 302 and "/login/" in response["Location"]


def test_pool_page_of_suspended_tenant_is_403(login, olivia, pool_a, tenant_a):
    tenant_a.status = "suspended"
    tenant_a.save()
    response = login(olivia).get(reverse("pool_detail", args=[pool_a.code]))
    assert response.status_code == 403


def test_pool_page_query_count_does_not_grow_with_history(
    login, olivia, live_device, pool_a, django_assert_max_num_queries
):
    from django.utils import timezone

    from devices.models import Command, DeviceEvent

    client = login(olivia)
    url = reverse("pool_detail", args=[pool_a.code])
    with CaptureQueriesContext(connection) as few:
        client.get(url)
    now = timezone.now()
    DeviceEvent.objects.bulk_create(
        DeviceEvent(
            tenant=pool_a.tenant,
            pool=pool_a,
            device=live_device,
            ts=now,
            kind="command.sent",
            message=f"Pump ON by {olivia.user.email}",
            actor=olivia.user,
        )
        for _ in range(60)
    )
    Command.objects.bulk_create(
        Command(
            tenant=pool_a.tenant,
            device=live_device,
            pool=pool_a,
            actor=olivia.user,
            op="pump",
            value="ON",
            expires_at=now,
        )
        for _ in range(60)
    )
    with django_assert_max_num_queries(len(few.captured_queries)):
        response = client.get(url)
    snap = snapshot_of(response)
    assert len(snap["events"]) == 30 and snap["events"][0]["actor"] == olivia.user.email
    assert len(snap["commands"]) == 30


# --- programs editor --------------------------------------------------------------


def program_form(**overrides) -> dict:
    """Slot 1 on Monday and Wednesday, everything else off."""
    data = {"s1_enabled": "on"}
    for slot in (1, 2, 3):
        for day in range(7):
            data[f"s{slot}_d{day}_mode"] = "1"
            data[f"s{slot}_d{day}_start"] = ""
            data[f"s{slot}_d{day}_stop"] = ""
    data.update(
        {
            "s1_d0_mode": "2",
            "s1_d0_start": "08:00",
            "s1_d0_stop": "10:30",
            "s1_d2_start": "18:00",
            "s1_d2_stop": "19:00",
        }
    )
    data.update(overrides)
    return data


def test_programs_page_shows_rules_and_slots(login, victor, pool_a):
    response = login(victor).get(reverse("pool_programs", args=[pool_a.code]))
    assert response.status_code == 200
    html = response.content.decode()
    assert "program 1 beats program 2" in html
    assert "Program 3" in html and "s3_d6_stop" in html
    assert "You are a viewer" in html and "Save programs" not in html


def test_programs_save(login, olivia, device_a, pool_a):
    response = login(olivia).post(
        reverse("pool_programs", args=[pool_a.code]), program_form()
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    program = Program.objects.get(pool=pool_a, slot=1)
    assert program.enabled
    assert program.days[0] == {"mode": 2, "start": "08:00", "stop": "10:30"}
    assert program.days[1] is None
    assert program.days[2]["start"] == "18:00"
    pool_a.refresh_from_db()
    assert pool_a.config_version >= 1
    page = login(olivia).get(reverse("pool_programs", args=[pool_a.code]))
    assert b'value="10:30"' in page.content


def test_programs_page_explains_where_programs_overlap(login, olivia, device_a, pool_a):
    client = login(olivia)
    data = program_form(
        s2_enabled="on", s2_d0_start="09:00", s2_d0_stop="11:00", s2_d0_mode="1"
    )
    assert (
        client.post(reverse("pool_programs", args=[pool_a.code]), data).status_code
        == 302
    )
    html = client.get(reverse("pool_programs", args=[pool_a.code])).content.decode()
    assert "Where these programs overlap" in html
    assert "09:00–10:30: program 1 runs, program 2 waits." in html


def test_programs_bad_input_saves_nothing(login, olivia, device_a, pool_a):
    response = login(olivia).post(
        reverse("pool_programs", args=[pool_a.code]),
        program_form(s1_d2_start="19:00", s1_d2_stop="18:00"),
    )
    assert response.status_code == 400
    html = response.content.decode()
    assert "Nothing was saved" in html
    # The message sits next to Wednesday's stop field of program 1.
    row = html[html.index('data-slot="1" data-day="2"') :]
    row = row[: row.index('data-day="3"')]
    assert "has-error" in row and "field-error" in row
    # The user's input is kept so they can fix it.
    assert 'value="19:00"' in html
    assert not Program.objects.filter(pool=pool_a).exists()
    pool_a.refresh_from_db()
    assert pool_a.config_version == 0


def test_programs_save_by_viewer_is_403(login, victor, device_a, pool_a):
    response = login(victor).post(
        reverse("pool_programs", args=[pool_a.code]), program_form()
    )
    assert response.status_code == 403
    assert b"operator" in response.content
    assert not Program.objects.exists()


def test_programs_of_foreign_pool_is_404(login, carol, pool_a):
    client = login(carol)
    url = reverse("pool_programs", args=[pool_a.code])
    assert client.get(url).status_code == 404
    assert client.post(url, program_form()).status_code == 404
    assert client.get(f"/pools/{uuid.uuid4().hex}/programs/").status_code == 404
    assert not Program.objects.exists()


# --- devices ----------------------------------------------------------------------


def test_devices_list(login, victor, live_device, device_b):
    response = login(victor).get(reverse("devices"))
    assert response.status_code == 200
    html = response.content.decode()
    assert "ESP-A1A1A1" in html and "ps1-0.1.0" in html and "1 h 0 min" in html
    assert "good" in html and "-58 dBm" in html
    assert "ESP-B2B2B2" not in html
    assert "Add device" not in html  # viewers cannot add


def test_devices_list_query_count_is_constant(
    login, alice, pool_a, platform_broker, django_assert_max_num_queries
):
    client = login(alice)
    with CaptureQueriesContext(connection) as one:
        client.get(reverse("devices"))
    for i in range(30):
        pool = Pool.objects.create(tenant=pool_a.tenant, name=f"P{i}")
        Device.objects.create(
            tenant=pool.tenant,
            pool=pool,
            broker=platform_broker,
            device_id=f"ESP-{i:06X}",
        )
    with django_assert_max_num_queries(len(one.captured_queries)):
        assert client.get(reverse("devices")).status_code == 200


def test_device_add_form_is_for_admins(login, olivia, adam, pool_a):
    assert login(olivia).get(reverse("device_add")).status_code == 403
    response = login(adam).get(reverse("device_add"))
    assert response.status_code == 200
    assert pool_a.code.hex in response.content.decode()


def test_device_add_shows_the_bundle_once(login, adam, pool_a, platform_broker):
    response = login(adam).post(
        reverse("device_add"),
        {
            "device_id": "ESP-C0FFEE",
            "pool": pool_a.code.hex,
            "broker": platform_broker.code.hex,
            "protocol": "ps1",
        },
    )
    assert response.status_code == 200, response.content.decode()[:3000]
    assert "no-store" in response["Cache-Control"]
    html = response.content.decode()
    assert "only time" in html and "<svg" in html and "ESP-C0FFEE.json" in html
    device = Device.objects.get(device_id="ESP-C0FFEE")
    assert device.pool == pool_a and device.tenant == pool_a.tenant
    # Never shown again: the list has no password.
    listing = login(adam).get(reverse("devices")).content.decode()
    assert "ESP-C0FFEE" in listing and '"password"' not in listing


@pytest.mark.parametrize(
    "field,value,message",
    [
        ("device_id", "not a device!", "device id"),
        ("pool", "foreign", "Pick one of your pools"),
        ("pool", uuid.uuid4().hex, "Pick one of your pools"),
        ("broker", uuid.uuid4().hex, "Pick the platform broker or one of your own"),
        ("protocol", "v9", "Pick poolsaas firmware or v3.1"),
    ],
)
def test_device_add_bad_input_adds_nothing(
    login, adam, pool_a, pool_b, platform_broker, field, value, message
):
    data = {
        "device_id": "ESP-C0FFEE",
        "pool": pool_a.code.hex,
        "broker": platform_broker.code.hex,
        "protocol": "ps1",
    }
    data[field] = pool_b.code.hex if value == "foreign" else value
    response = login(adam).post(reverse("device_add"), data)
    assert response.status_code == 400
    assert message.lower() in response.content.decode().lower()
    assert not Device.objects.exists()


def test_device_remove(login, adam, victor, carol, device_a):
    url = reverse("device_remove", args=[device_a.code])
    assert login(carol).post(url).status_code == 404
    assert login(victor).post(url).status_code == 403
    assert login(adam).get(f"/devices/{uuid.uuid4().hex}/remove/").status_code == 404
    assert Device.objects.filter(pk=device_a.pk).exists()
    assert login(adam).get(url).status_code == 200
    response = login(adam).post(url)
    assert response.status_code == 302
    assert not Device.objects.filter(pk=device_a.pk).exists()


def test_device_replace(login, adam, victor, carol, device_a, pool_a):
    url = reverse("device_replace", args=[pool_a.code])
    assert login(carol).post(url, {"device_id": "ESP-0DD0DD"}).status_code == 404
    assert login(victor).post(url, {"device_id": "ESP-0DD0DD"}).status_code == 403
    bad = login(adam).post(url, {"device_id": "bad id!"})
    assert bad.status_code == 400
    pool_a.refresh_from_db()
    assert pool_a.device.device_id == "ESP-A1A1A1"
    response = login(adam).post(url, {"device_id": "ESP-0DD0DD"})
    assert response.status_code in (200, 302), response.content.decode()[:3000]
    pool_a.refresh_from_db()
    assert pool_a.device.device_id == "ESP-0DD0DD"


# --- pools overview ---------------------------------------------------------------


def _make_pools(tenant, broker, count: int, start: int = 0):
    pools = Pool.objects.bulk_create(
        Pool(tenant=tenant, name=f"Pool {i:04d}") for i in range(start, start + count)
    )
    Device.objects.bulk_create(
        Device(
            tenant=tenant,
            pool=pool,
            broker=broker,
            device_id=f"ESP-{i:06X}",
            online=i % 3 != 0,
            state={"pump": i % 2 == 0, "valve": 1 + i % 2, "temperature": 20 + i % 9},
        )
        for i, pool in zip(range(start, start + count), pools, strict=True)
    )


def test_overview_shows_live_columns(login, olivia, live_device, pool_b):
    response = login(olivia).get(reverse("pools"))
    html = response.content.decode()
    assert response.status_code == 200
    assert f'data-pool="{live_device.pool.code.hex}"' in html
    assert "26.4 °C" in html and "Eyectores" in html and "js/overview.js" in html
    assert reverse("pool_detail", args=[live_device.pool.code]) in html
    assert "Globex" not in html


def test_overview_queries_do_not_grow_with_500_pools(
    login, olivia, tenant_a, platform_broker, django_assert_num_queries
):
    _make_pools(tenant_a, platform_broker, 5)
    client = login(olivia)
    with CaptureQueriesContext(connection) as few:
        client.get(reverse("pools"))
    _make_pools(tenant_a, platform_broker, 495, start=5)
    with django_assert_num_queries(len(few.captured_queries)):
        response = client.get(reverse("pools"))
    assert response.status_code == 200
    assert response.content.decode().count("data-pool=") == 50  # one page
    page = client.get(reverse("pools"), {"q": "Pool 0499"}).content.decode()
    assert page.count("data-pool=") == 1
    last = client.get(reverse("pools"), {"page": 10}).content.decode()
    assert "Pool 0499" in last and "Page 10 of 10" in last
