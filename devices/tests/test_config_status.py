"""The parts of "programs reach a ps1 device" (issue 9, points 1, 11 and 12) that are
decisions rather than plumbing: the core's handling of config/applied and of retained
v3.1 wifi/state, the bridge's config sweep (which device gets which version, once),
the pages' status rule and the one v3.1 "done" rule. The whole path through the bridge
process, Mosquitto and a simulated device is in test_config_push.py."""

import threading
import uuid

import pytest

from devices.bridge.directory import Directory
from devices.bridge.runner import Bridge
from devices.models import Device, Pool
from devices.selectors import devices_for_bridge
from devices.services.commands import command_v31_done
from devices.services.programs import pool_config_status
from devices.tests.mqtt_driver import DevicesCore
from devices.tests.test_bridge_core import BROKER, NOW, _row
from firmware import protocol
from poolsaas.live.messages import CONFIG_PUBLISH

PS1 = "devices/ESP-A1A1A1"
V31 = "acme/pools/esp32-pool-01"
CONNECTED = (
    b'{"status":"connected","ssid":"home","ip":"10.0.0.9","rssi":-55,"quality":"good"}'
)


@pytest.fixture
def core():
    return DevicesCore(
        Directory.build(
            [
                _row(1, "ESP-A1A1A1"),
                _row(2, "esp32-pool-01", proto="v3.1", prefix="acme/pools"),
            ]
        )
    )


# --- config/applied in the core -----------------------------------------------------


def test_an_applied_config_is_kept_in_the_state_and_logged_once(core):
    answer = protocol.encode_config_applied(4, True)
    core.handle(BROKER, f"{PS1}/config/applied", answer, NOW)
    fx = core.drain()
    assert fx.writes[1].config_version_applied == 4
    assert fx.writes[1].delta["config"] == {"version": 4, "ok": True}
    assert [e[2] for e in fx.events] == ["online", "config.applied"]
    assert list(fx.pools)  # the pool page hears it through pool.state
    # The device answers again on a reconnect; the broker replays the retained one
    # to a restarted bridge: neither is news.
    core.handle(BROKER, f"{PS1}/config/applied", answer, NOW + 5)
    core.handle(BROKER, f"{PS1}/config/applied", answer, NOW + 9, retain=True)
    fx = core.drain()
    assert fx.events == []
    assert "config" not in fx.writes[1].delta


def test_a_rejected_config_keeps_the_reason_and_not_the_version(core):
    core.handle(
        BROKER, f"{PS1}/config/applied", protocol.encode_config_applied(3, True), NOW
    )
    core.drain()
    rejected = protocol.encode_config_applied(4, False, "programs[0]: bad")
    core.handle(BROKER, f"{PS1}/config/applied", rejected, NOW + 1)
    fx = core.drain()
    assert fx.writes[1].config_version_applied is None  # 3 stays in force
    assert fx.writes[1].delta["config"] == {
        "version": 4,
        "ok": False,
        "error": "programs[0]: bad",
    }
    (event,) = fx.events
    assert event[2] == "config.rejected"
    assert event[3] == "Configuration 4 rejected: programs[0]: bad"


def test_a_db_state_seen_before_a_restart_is_not_logged_again():
    row = _row(1, "ESP-A1A1A1")
    row["state"] = {"config": {"version": 4, "ok": True}}
    core = DevicesCore(Directory.build([row]))
    answer = protocol.encode_config_applied(4, True)
    core.handle(BROKER, f"{PS1}/config/applied", answer, NOW, retain=True)
    assert core.drain().events == []


# --- retained v3.1 wifi/state (point 12) ---------------------------------------------


def test_a_retained_v31_connected_wifi_state_means_online(core):
    core.handle(BROKER, f"{V31}/pump/state", b"ON", NOW, retain=True)
    assert core.directory.by_pk[2].online is False  # state, not presence
    core.handle(BROKER, f"{V31}/wifi/state", CONNECTED, NOW + 1, retain=True)
    fx = core.drain()
    assert fx.writes[2].online is True and fx.writes[2].last_seen == NOW + 1
    assert [e[2] for e in fx.events] == ["online"]
    info = core.directory.by_pk[2]
    assert info.online_since == NOW + 1
    # Not the device speaking on this connection: commands still get the short
    # hold after a reconnect (devices.mqtt.outgoing.Outgoing._device_reachable).
    assert info.last_live == 0.0
    core.handle(BROKER, f"{V31}/wifi/state", protocol.WIFI_DISCONNECTED, NOW + 2, True)
    assert core.drain().writes[2].online is False


def test_a_retained_wifi_state_of_a_ps1_device_proves_nothing(core):
    # A ps1 device's last will is on status, not on wifi/state.
    core.handle(BROKER, f"{PS1}/wifi/state", CONNECTED, NOW, retain=True)
    assert core.drain().writes[1].online is None
    assert core.directory.by_pk[1].online is False
    core.handle(BROKER, f"{PS1}/status", b"online", NOW + 1, retain=True)
    assert core.directory.by_pk[1].online is True


def test_the_directory_keeps_online_since_and_last_live_across_rebuilds(core):
    core.handle(BROKER, f"{PS1}/status", b"online", NOW)
    rebuilt = Directory.build([_row(1, "ESP-A1A1A1")], previous=core.directory)
    assert rebuilt.by_pk[1].online_since == NOW
    assert rebuilt.by_pk[1].last_live == NOW


# --- the pages' status rule ----------------------------------------------------------


def _device(protocol_name="ps1", applied=None, answer=None):
    return Device(
        protocol=protocol_name,
        config_version_applied=applied,
        state={"config": answer} if answer else {},
    )


@pytest.mark.parametrize(
    ("applied", "answer", "status", "text"),
    [
        (5, {"version": 5, "ok": True}, "applied", "applied (version 5)"),
        (None, None, "pending", "pending (version 5 not confirmed yet)"),
        (
            4,
            {"version": 4, "ok": True},
            "pending",
            "pending (version 5 not confirmed yet)",
        ),
        (
            4,
            {"version": 5, "ok": False, "error": "bad tz"},
            "rejected",
            "rejected by the device: bad tz",
        ),
        # A rejection of an older version says nothing about the current one.
        (3, {"version": 4, "ok": False, "error": "x"}, "pending", None),
    ],
)
def test_config_status(applied, answer, status, text):
    pool = Pool(config_version=5)
    result = pool_config_status(
        pool=pool, device=_device(applied=applied, answer=answer)
    )
    assert result["status"] == status and result["target"] == 5
    if text:
        assert result["text"] == text
    assert (result["error"] is not None) == (status == "rejected")


def test_no_config_status_without_a_ps1_device():
    pool = Pool(config_version=5)
    assert pool_config_status(pool=pool, device=None) is None
    assert pool_config_status(pool=pool, device=_device("v3.1")) is None


# --- the one v3.1 "done" rule (point 11) ---------------------------------------------


def test_v31_done_rule():
    on = {"kind": "pump", "value": True}
    toggle_unknown = {"kind": "pump", "value": None}
    assert command_v31_done(
        expected=on, kind="pump", value=True, reported_at=10, sent_at=10
    )
    assert not command_v31_done(
        expected=on, kind="pump", value=True, reported_at=9.9, sent_at=10
    )
    assert not command_v31_done(
        expected=on, kind="pump", value=False, reported_at=11, sent_at=10
    )
    assert not command_v31_done(
        expected=on, kind="valve", value=True, reported_at=11, sent_at=10
    )
    # Known at publish time: done when the device already shows a definite value.
    assert command_v31_done(
        expected=on, kind="pump", value=True, reported_at=None, sent_at=10
    )
    assert not command_v31_done(
        expected=toggle_unknown, kind="pump", value=True, reported_at=None, sent_at=10
    )
    assert command_v31_done(
        expected=toggle_unknown, kind="pump", value=True, reported_at=11, sent_at=10
    )
    assert not command_v31_done(
        expected=None, kind="pump", value=True, reported_at=11, sent_at=10
    )


# --- the bridge's config sweep -------------------------------------------------------


class RecordingConnection:
    """Stands in for a broker connection: records what the sweep publishes."""

    def __init__(self, broker_id, connected_at=1000.0):
        self.broker_id = broker_id
        self.connected = threading.Event()
        self.connected.set()
        self.connected_at = connected_at
        self.published = []

    def publish(self, topic, payload, *, qos=1, retain=False):
        self.published.append(
            (topic, protocol.parse_config(payload)["version"], qos, retain)
        )
        return True


@pytest.fixture
def sweep(db, platform_broker):
    bridge = Bridge(live=False, refresh_interval=3600)
    conn = RecordingConnection(platform_broker.pk)
    bridge.connections = {platform_broker.pk: conn}

    def run(*, full=True, rebuild=True):
        if rebuild:
            bridge.dispatcher.directory = Directory.build(
                devices_for_bridge(broker_ids=[platform_broker.pk]),
                previous=bridge.dispatcher.directory,
            )
        if full:
            bridge.room("devices").config_sweep.next_full = 0.0
        conn.published.clear()
        bridge.room("devices").sweep_config(bridge.outbox)
        return list(conn.published)

    return bridge, conn, run


def _ps1(pool, broker, **fields):
    return Device.objects.create(
        tenant=pool.tenant,
        pool=pool,
        broker=broker,
        device_id=f"ESP-{uuid.uuid4().hex[:6].upper()}",
        **fields,
    )


def test_the_sweep_publishes_each_outdated_device_once(
    sweep, pool_a, pool_b, platform_broker, tenant_a
):
    bridge, conn, run = sweep
    outdated = _ps1(pool_a, platform_broker)
    _ps1(pool_b, platform_broker, config_version_applied=0)  # up to date
    v31_pool = Pool.objects.create(tenant=tenant_a, name="Old one", config_version=3)
    _ps1(v31_pool, platform_broker, protocol="v3.1")
    Pool.objects.filter(pk=pool_a.pk).update(config_version=2)

    assert run() == [(f"devices/{outdated.device_id}/config/set", 2, 1, True)]
    assert run() == []  # not again: it was published for this version
    assert bridge.room("devices").config_published == 1

    Pool.objects.filter(pk=pool_a.pk).update(config_version=3)
    assert [p[1] for p in run()] == [3]  # a newer version is published

    # The device comes online (again): published again, in case the broker lost
    # the retained message.
    bridge.dispatcher.directory.by_pk[outdated.pk].online_since = NOW
    assert [p[1] for p in run(rebuild=False)] == [3]
    # The bridge reconnected to the broker: published again.
    conn.connected_at += 1
    assert [p[1] for p in run()] == [3]
    Device.objects.filter(pk=outdated.pk).update(config_version_applied=3)
    assert run() == []


def test_the_doorbell_names_the_pools_to_publish_now(
    sweep, pool_a, pool_b, platform_broker
):
    bridge, conn, run = sweep
    a = _ps1(pool_a, platform_broker)
    _ps1(pool_b, platform_broker)
    run()  # the full sweep at start: both published
    bridge.room("devices").config_sweep.next_full = float("inf")
    Pool.objects.filter(pk__in=[pool_a.pk, pool_b.pk]).update(config_version=1)
    assert run(full=False) == []  # no doorbell, no full sweep due: nothing

    bridge._on_doorbell({"type": CONFIG_PUBLISH, "pool": pool_a.code.hex})
    bridge._on_doorbell({"type": CONFIG_PUBLISH, "pool": "not-a-code"})
    bridge._on_doorbell({"type": CONFIG_PUBLISH, "pool": 42})
    published = run(full=False)
    assert published == [(f"devices/{a.device_id}/config/set", 1, 1, True)]


def test_the_sweep_skips_brokers_it_is_not_connected_to(sweep, pool_a, platform_broker):
    bridge, conn, run = sweep
    _ps1(pool_a, platform_broker)
    conn.connected.clear()
    assert run() == []
    conn.connected.set()
    assert len(run()) == 1


def test_a_failed_publish_is_retried_by_the_next_sweep(sweep, pool_a, platform_broker):
    bridge, conn, run = sweep
    _ps1(pool_a, platform_broker)
    conn.publish = lambda *a, **k: False  # the connection dropped under us
    assert run() == []
    del conn.publish
    assert len(run()) == 1
