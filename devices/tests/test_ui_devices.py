"""The customer-facing words of the devices dashboard (issue 9, points 4, 6, 7, 8 and
the time-zone list; issue 10, a damaged programs form): one log entry per command in
the pool's mode names, a label for every event kind, "never connected", one wording
for relative times, canonical time zones, a clear 400 for a damaged config_version,
and a week of demo history (the history page's words and its one bucketing are in
telemetry/tests/test_history_words.py)."""

import io
import json
from datetime import UTC, datetime, timedelta

import pytest
from django.core.management import call_command
from django.urls import reverse
from django.utils import timezone

from devices.models import Device, DeviceEvent, Pool, Program
from devices.services.commands import command_ack, command_fail, command_send
from devices.services.events import EVENT_LABELS, event_as_dict, event_label
from devices.templatetags.devices_ui import ago
from firmware.protocol import EVENT_TYPES
from telemetry.models import TelemetrySample

pytestmark = pytest.mark.django_db


@pytest.fixture
def online_device(device_a):
    Device.objects.filter(pk=device_a.pk).update(
        online=True, last_seen_at=timezone.now()
    )
    device_a.refresh_from_db()
    return device_a


# --- the event log ------------------------------------------------------------------


def command_events(pool):
    return list(DeviceEvent.objects.filter(pool=pool, kind__startswith="command."))


def test_a_command_is_one_log_entry_whose_status_changes(
    olivia, online_device, pool_a, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        command = command_send(membership=olivia, pool=pool_a, op="valve", value=2)
    [sent] = command_events(pool_a)
    assert sent.kind == "command.sent"
    assert sent.message == f"Valve to Eyectores by {olivia.user.email}"
    assert event_as_dict(sent)["label"] == "Sent"

    command_ack(device_pk=online_device.pk, command_id=command.code.hex, ok=True)
    [done] = command_events(pool_a)
    assert done.pk == sent.pk and done.code == sent.code and done.ts == sent.ts
    assert done.kind == "command.done"
    assert done.message == f"Valve to Eyectores by {olivia.user.email}"
    assert event_as_dict(done)["label"] == "Done"


def test_a_failed_timer_names_the_mode_and_the_reason(olivia, online_device, pool_a):
    pool_a.mode1_name = "Skimmer"
    pool_a.save(update_fields=["mode1_name"])
    command = command_send(
        membership=olivia, pool=pool_a, op="timer", value={"mode": 1, "duration": 1800}
    )
    command_fail(command=command, error="The device tried and failed")
    [entry] = command_events(pool_a)
    assert entry.kind == "command.failed"
    assert entry.message == (
        f"Timer 30 min in Skimmer by {olivia.user.email}: The device tried and failed"
    )
    as_shown = event_as_dict(entry)
    assert as_shown["label"] == "Failed" and as_shown["tone"] == "bad"


def test_pump_commands_read_on_and_off(olivia, online_device, pool_a):
    command_send(membership=olivia, pool=pool_a, op="pump", value="ON")
    assert command_events(pool_a)[0].message.startswith("Pump on by ")


def test_a_command_to_an_offline_device_is_one_entry_too(olivia, device_a, pool_a):
    command_send(membership=olivia, pool=pool_a, op="valve", value=1)
    [entry] = command_events(pool_a)
    assert entry.kind == "command.failed"
    assert entry.message.startswith("Valve to Cascada by ")
    assert "The device is offline" in entry.message


def test_every_event_kind_has_words():
    kinds = set(EVENT_LABELS) | {f"device.{t}" for t in EVENT_TYPES}
    kinds |= {"programs.updated", "program_start", "program_stop", "online"}
    for kind in kinds:
        label = event_label(kind)
        assert label and "." not in label and "_" not in label, (kind, label)
    assert event_label("programs.updated") == "Programs"
    # An unknown kind still reads as words.
    assert event_label("config.something_new") == "Something new"


def test_the_pool_page_snapshot_carries_labels(login, olivia, online_device, pool_a):
    command_send(membership=olivia, pool=pool_a, op="valve", value=2)
    response = login(olivia).get(reverse("pool_detail", args=[pool_a.code]))
    html = response.content.decode()
    start = html.index('<script id="pool-snapshot" type="application/json">')
    snap = json.loads(html[start:].split(">", 1)[1].split("</script>", 1)[0])
    [event] = snap["events"]
    assert event["label"] == "Sent" and event["code"]
    assert event["message"].startswith("Valve to Eyectores")


# --- devices page and relative times -------------------------------------------------


def test_a_device_never_seen_says_never_connected(login, victor, device_a):
    html = login(victor).get(reverse("devices")).content.decode()
    row = html[html.index("ESP-A1A1A1") :]
    row = row[: row.index("</tr>")]
    assert "never connected" in row
    assert "weak" not in row and "dBm" not in row


def test_relative_times_are_worded_one_way():
    now = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)
    cases = [
        (timedelta(0), "just now"),
        (timedelta(seconds=59), "just now"),
        (timedelta(seconds=60), "1 min ago"),
        (timedelta(minutes=59, seconds=59), "59 min ago"),
        (timedelta(hours=2, minutes=5), "2 h ago"),
        (timedelta(days=3, hours=1), "3 d ago"),
        (timedelta(seconds=-5), "just now"),  # a clock a little ahead
    ]
    for delta, words in cases:
        assert ago(now - delta, now) == words, delta
    assert ago(None) == "never"


def test_pages_say_just_now_not_0_minutes(login, alice, online_device, pool_a):
    client = login(alice)
    for url in (
        reverse("devices"),
        reverse("pools"),
        reverse("pool_detail", args=[pool_a.code]),
    ):
        html = client.get(url).content.decode()
        assert "just now" in html, url
        assert "0 minutes" not in html and "minutes ago" not in html, url


# --- time zones -------------------------------------------------------------------


def test_the_time_zone_list_offers_canonical_zones_only(login, alice, pool_a):
    html = login(alice).get(reverse("pool_settings", args=[pool_a.code])).content
    html = html.decode()
    for odd in ("Factory", "localtime", "posixrules", "US/Eastern", "Etc/GMT+3"):
        assert f'value="{odd}"' not in html, odd
    for zone in ("Europe/Madrid", "America/New_York", "Atlantic/Canary", "UTC"):
        assert f'value="{zone}"' in html, zone


@pytest.mark.parametrize("zone", ["Factory", "localtime"])
def test_a_non_canonical_zone_is_refused_and_changes_nothing(
    login, alice, pool_a, zone
):
    response = login(alice).post(
        reverse("pool_settings", args=[pool_a.code]),
        {
            "name": "Renamed",
            "timezone_name": zone,
            "mode1_name": "Cascada",
            "mode2_name": "Eyectores",
        },
    )
    assert response.status_code == 400
    assert f"Unknown time zone {zone}" in response.content.decode()
    pool_a.refresh_from_db()
    assert pool_a.name == "Acme Main Pool" and pool_a.timezone == "Europe/Madrid"


def test_a_pool_on_an_old_alias_keeps_it_visible(login, alice, pool_a):
    Pool.objects.filter(pk=pool_a.pk).update(timezone="US/Eastern")
    html = login(alice).get(reverse("pool_settings", args=[pool_a.code])).content
    assert b'value="US/Eastern" selected' in html
    assert b"no longer offered" in html


# --- the programs form ------------------------------------------------------------


def programs_form(**overrides) -> dict:
    data = {"s1_enabled": "on", "s1_d0_mode": "1"}
    data.update({"s1_d0_start": "08:00", "s1_d0_stop": "09:00"})
    data.update(overrides)
    return data


@pytest.mark.parametrize("version", ["²", "9" * 5000, "-1", "1e3", "٣"])
def test_a_damaged_config_version_is_a_clear_400(
    login, olivia, device_a, pool_a, version
):
    response = login(olivia).post(
        reverse("pool_programs", args=[pool_a.code]),
        programs_form(config_version=version),
    )
    assert response.status_code == 400
    html = response.content.decode()
    assert "Nothing was saved" in html and "reload the page" in html
    assert not Program.objects.filter(pool=pool_a).exists()
    pool_a.refresh_from_db()
    assert pool_a.config_version == 0


def test_a_missing_stop_says_so(login, olivia, device_a, pool_a):
    response = login(olivia).post(
        reverse("pool_programs", args=[pool_a.code]),
        programs_form(s1_d0_stop=""),
    )
    assert response.status_code == 400
    html = response.content.decode()
    assert "Stop time missing." in html
    assert "Enter the stop as HH:MM" not in html


def test_typed_times_are_tidied_to_24_hour(login, olivia, device_a, pool_a):
    response = login(olivia).post(
        reverse("pool_programs", args=[pool_a.code]),
        programs_form(s1_d0_start="930", s1_d0_stop="9.45", config_version="0"),
    )
    assert response.status_code == 302
    program = Program.objects.get(pool=pool_a, slot=1)
    assert program.days[0] == {"mode": 1, "start": "09:30", "stop": "09:45"}


# --- seed_demo ----------------------------------------------------------------------


def test_seed_demo_adds_a_week_of_history_once(settings):
    settings.DEBUG = True
    out = io.StringIO()
    call_command("seed_demo", stdout=out)
    assert "history samples" in out.getvalue()
    devices = Device.objects.filter(tenant__slug__in=["acme", "globex"])
    assert devices.count() == 4
    first = TelemetrySample.objects.count()
    per_device = 7 * 24 * 12
    assert first >= 4 * (per_device - 2)
    for device in devices:
        samples = TelemetrySample.objects.filter(device=device)
        oldest = samples.order_by("ts").first().ts
        assert timezone.now() - oldest >= timedelta(days=6, hours=23)
        temps = list(samples.values_list("temperature", flat=True))
        assert 20 < min(temps) < max(temps) < 30  # a day's warming and cooling
        on = samples.filter(pump=True).count() / samples.count()
        assert 0.2 < on < 0.3  # six hours a day
    call_command("seed_demo", stdout=io.StringIO())
    assert TelemetrySample.objects.count() == first  # a second run adds nothing
