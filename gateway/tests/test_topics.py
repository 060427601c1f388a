"""Topic names, filters, expansion over a tenant's devices, and the exact v3.1
retained payloads built from the bridge's state."""

import datetime as dt
import json

import pytest

from firmware import protocol
from gateway import topics

NOW = dt.datetime(2026, 12, 2, 12, 0, 0, tzinfo=dt.UTC).timestamp()


def iso(seconds_ago: float) -> str:
    return dt.datetime.fromtimestamp(NOW - seconds_ago, dt.UTC).isoformat()


# The tenant's devices as the consumer will give them: a v3.1 one under the default
# prefix and a ps1 one under a two-level prefix.
MINE = topics.device_topics("devices", "esp32-pool-01", "v3.1") + topics.device_topics(
    "acme/site-1", "ESP-A1B2C3", "ps1"
)
ROOTS = {"devices/esp32-pool-01", "acme/site-1/ESP-A1B2C3"}


@pytest.mark.parametrize(
    ("topic_filter", "topic", "expected"),
    [
        ("a/b", "a/b", True),
        ("a/+", "a/b", True),
        ("a/+", "a/b/c", False),
        ("a/#", "a", True),
        ("a/#", "a/b/c", True),
        ("#", "a/b", True),
        ("+/+", "a/b", True),
        ("+", "a/b", False),
        ("a/+/c", "a//c", True),
        ("#", "$SYS/x", False),
        ("+/x", "$SYS/x", False),
        ("$SYS/#", "$SYS/x", True),
        ("a/b", "a/b/", False),
    ],
)
def test_matches(topic_filter, topic, expected):
    assert topics.is_valid_filter(topic_filter)
    assert topics.matches(topic_filter, topic) is expected


@pytest.mark.parametrize("bad", ["", "a#", "a/#/b", "a+", "+a/b", "a/\x00", 5, None])
def test_invalid_filters(bad):
    assert not topics.is_valid_filter(bad)


@pytest.mark.parametrize("bad", ["", "a/+", "a/#", "a\x00", "\ud800", b"a"])
def test_invalid_topic_names(bad):
    assert not topics.is_valid_topic_name(bad)


def test_device_topics_are_what_each_protocol_publishes():
    assert topics.device_topics("devices", "esp32-pool-01", "v3.1") == [
        "devices/esp32-pool-01/pump/state",
        "devices/esp32-pool-01/valve/state",
        "devices/esp32-pool-01/timer/state",
        "devices/esp32-pool-01/temperature/state",
        "devices/esp32-pool-01/wifi/state",
    ]
    ps1 = topics.device_topics("p", "ESP-A1B2C3", "ps1")
    assert [t.split("/", 2)[2] for t in ps1] == list(protocol.DEVICE_TO_CLOUD)


def test_wildcards_expand_only_over_the_given_devices():
    assert topics.expand("#", MINE) == MINE
    assert topics.expand("devices/+/pump/state", MINE) == [
        "devices/esp32-pool-01/pump/state"
    ]
    assert topics.expand("+/+/+/pump/state", MINE) == [
        "acme/site-1/ESP-A1B2C3/pump/state"
    ]
    assert topics.expand("acme/#", MINE) == MINE[5:]
    # Set topics are the devices' inputs, not something they publish.
    assert topics.expand("devices/esp32-pool-01/pump/set", MINE) == []


def test_foreign_and_missing_devices_are_the_same_nothing():
    # Another tenant's device exists somewhere; this tenant's set does not hold it.
    foreign = topics.expand("devices/esp32-pool-99/pump/state", MINE)
    missing = topics.expand("devices/no-such-device/pump/state", MINE)
    assert foreign == missing == []
    assert topics.split("devices/esp32-pool-99/pump/set", ROOTS) is None
    assert topics.split("devices/no-such-device/pump/set", ROOTS) is None


def test_split_finds_the_device_under_multi_level_prefixes():
    assert topics.split("devices/esp32-pool-01/pump/set", ROOTS) == (
        "devices/esp32-pool-01",
        "pump/set",
    )
    assert topics.split("acme/site-1/ESP-A1B2C3/cmd", ROOTS) == (
        "acme/site-1/ESP-A1B2C3",
        "cmd",
    )
    assert topics.split("devices/esp32-pool-01", ROOTS) is None
    assert topics.split("devices/esp32-pool-01/", ROOTS) is None
    assert topics.split("devices/esp32-pool-01/pump//set", ROOTS) is None


@pytest.mark.parametrize(
    ("suffix", "payload", "expected"),
    [
        ("pump/set", b"on", ("pump", "ON")),
        ("pump/set", b"0", ("pump", "OFF")),
        ("pump/set", b"TOGGLE", ("pump", "TOGGLE")),
        ("valve/set", b"2", ("valve", 2)),
        (
            "timer/set",
            b'{"mode":1,"duration":600}',
            ("timer", {"mode": 1, "duration": 600}),
        ),
        ("wifi/clear", b"\xff", ("wifi_clear", None)),
        (
            "cmd",
            b'{"id":"c-1","exp":0,"op":"valve","value":"TOGGLE"}',
            ("valve", "TOGGLE"),
        ),
    ],
)
def test_command_of(suffix, payload, expected):
    assert topics.command_of(suffix, payload) == expected


@pytest.mark.parametrize(
    ("suffix", "payload"),
    [
        ("pump/set", b"maybe"),
        ("valve/set", b"3"),
        ("timer/set", b'{"mode":3,"duration":1}'),
        ("cmd", b'{"op":"pump","value":"ON"}'),  # no id
        ("config/set", b"{}"),
        ("pump/state", b"ON"),
        ("ota/offer", b"{}"),
    ],
)
def test_command_of_refuses(suffix, payload):
    with pytest.raises(protocol.ProtocolError):
        topics.command_of(suffix, payload)


V31_STATE = {
    "pump": True,
    "valve": 2,
    "timer": {
        "active": True,
        "remaining": 600,
        "mode": 2,
        "duration": 1800,
        "at": iso(100.4),
    },
    "temperature": 25.25,
    "wifi": {
        "status": "connected",
        "ssid": "Casa",
        "ip": "192.168.1.50",
        "rssi": -58,
        "quality": "good",
    },
}


def test_v31_payloads_exactly():
    out = topics.state_messages(
        prefix="devices",
        device_id="esp32-pool-01",
        device_protocol="v3.1",
        state=V31_STATE,
        online=True,
        now=NOW,
    )
    root = "devices/esp32-pool-01/"
    assert out == {
        root + "pump/state": b"ON",
        root + "valve/state": b"2",
        # 600 s at the report, 100.4 s ago: 499.6 left, shown as 500.
        root
        + "timer/state": b'{"active":true,"remaining":500,"mode":2,"duration":1800}',
        root + "temperature/state": b"25.2",
        root + "wifi/state": (
            b'{"status":"connected","ssid":"Casa","ip":"192.168.1.50",'
            b'"rssi":-58,"quality":"good"}'
        ),
    }
    timer = json.loads(out[root + "timer/state"])
    assert type(timer["mode"]) is int and type(timer["remaining"]) is int


def test_offline_device_shows_the_last_will_and_keeps_its_last_state():
    out = topics.state_messages(
        prefix="devices",
        device_id="esp32-pool-01",
        device_protocol="v3.1",
        state=V31_STATE,
        online=False,
        now=NOW,
    )
    assert out["devices/esp32-pool-01/wifi/state"] == b'{"status":"disconnected"}'
    assert out["devices/esp32-pool-01/pump/state"] == b"ON"


def test_timer_that_ran_out_since_the_report_is_shown_stopped():
    state = {
        "timer": {
            "active": True,
            "remaining": 30,
            "mode": 1,
            "duration": 60,
            "at": iso(31),
        }
    }
    out = topics.state_messages(
        prefix="d",
        device_id="x",
        device_protocol="v3.1",
        state=state,
        online=True,
        now=NOW,
    )
    assert (
        out["d/x/timer/state"]
        == b'{"active":false,"remaining":0,"mode":1,"duration":60}'
    )


def test_timer_without_a_time_is_shown_as_reported():
    state = {"timer": {"active": False, "remaining": 0, "mode": 1, "duration": 0}}
    out = topics.state_messages(
        prefix="d",
        device_id="x",
        device_protocol="v3.1",
        state=state,
        online=True,
        now=NOW,
    )
    assert (
        out["d/x/timer/state"]
        == b'{"active":false,"remaining":0,"mode":1,"duration":0}'
    )


@pytest.mark.parametrize("rssi", [-50, -60, -70, -71, -127])
def test_wifi_quality_is_the_protocol_word(rssi):
    state = {
        "wifi": {
            "status": "connected",
            "ssid": "s",
            "ip": "i",
            "rssi": rssi,
            "quality": "bogus",
        }
    }
    out = topics.state_messages(
        prefix="d",
        device_id="x",
        device_protocol="v3.1",
        state=state,
        online=True,
        now=NOW,
    )
    assert json.loads(out["d/x/wifi/state"])["quality"] == protocol.wifi_quality(rssi)


def test_ps1_device_adds_status_and_config_applied():
    state = {
        "pump": False,
        "valve": 1,
        "temperature": None,
        "wifi": {"status": "connected", "rssi": -45, "quality": "excellent"},
        "config": {"version": 7, "ok": False, "error": "programs[0]: bad"},
    }
    out = topics.state_messages(
        prefix="p",
        device_id="ESP-A1B2C3",
        device_protocol="ps1",
        state=state,
        online=True,
        now=NOW,
    )
    root = "p/ESP-A1B2C3/"
    assert out == {
        root + "pump/state": b"OFF",
        root + "valve/state": b"1",
        # No ssid or ip known (telemetry carries only the signal): null, as the
        # bridge reads a v3.1 wifi/state without them.
        root + "wifi/state": (
            b'{"status":"connected","ssid":null,"ip":null,"rssi":-45,"quality":"excellent"}'
        ),
        root + "status": b"online",
        root + "config/applied": b'{"version":7,"ok":false,"error":"programs[0]: bad"}',
    }
    offline = topics.state_messages(
        prefix="p",
        device_id="ESP-A1B2C3",
        device_protocol="ps1",
        state=state,
        online=False,
        now=NOW,
    )
    assert offline[root + "status"] == b"offline"


@pytest.mark.parametrize(
    "state",
    [
        None,
        {},
        {"pump": 1, "valve": True, "temperature": True, "timer": {"active": 1}},
        {"valve": 3, "temperature": float("nan"), "wifi": {"status": "weird"}},
        {
            "timer": {
                "active": True,
                "remaining": 5,
                "mode": 1,
                "duration": 9,
                "at": "x",
            }
        },
    ],
)
def test_unknown_or_odd_state_gives_no_made_up_values(state):
    out = topics.state_messages(
        prefix="d",
        device_id="x",
        device_protocol="v3.1",
        state=state,
        online=True,
        now=NOW,
    )
    for topic, payload in out.items():
        kind, value = protocol.parse_device_message(topic[4:], payload)
        assert value is not None


def test_every_built_payload_parses_back_as_the_protocol_says():
    for device_protocol in ("v3.1", "ps1"):
        for online in (True, False):
            out = topics.state_messages(
                prefix="d",
                device_id="x",
                device_protocol=device_protocol,
                state={**V31_STATE, "config": {"version": 1, "ok": True}},
                online=online,
                now=NOW,
            )
            for topic, payload in out.items():
                protocol.parse_device_message(topic[4:], payload)


def test_changed_gives_only_new_payloads():
    before = {"a": b"1", "b": b"2"}
    assert topics.changed(before, {"a": b"1", "b": b"3", "c": b"4"}) == [
        ("b", b"3"),
        ("c", b"4"),
    ]
