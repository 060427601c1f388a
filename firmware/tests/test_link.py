"""firmware.link: the pure network choice (CPython and MicroPython)."""

try:
    from firmware import link
    from firmware import protocol as P
except ImportError:  # MicroPython: flat filesystem
    import link
    import protocol as P

NETS = [("Pool", "pw1"), ("House", "pw2"), ("Garage", "pw3")]


def test_networks_on_the_air_in_configured_priority():
    assert link.pick_networks(NETS, ["Garage", "Neighbour", "Pool"]) == [
        ("Pool", "pw1"),
        ("Garage", "pw3"),
    ]


def test_hidden_networks_are_still_tried_when_the_scan_sees_none():
    assert link.pick_networks(NETS, ["Neighbour"]) == NETS
    assert link.pick_networks(NETS, []) == NETS


def test_backoff_grows_caps_below_ten_seconds_and_is_jittered():
    b = link.BACKOFF_S
    assert list(b) == sorted(b) and b[-1] <= 8
    assert link.backoff_ms(0, lambda: 0.0) == 500
    assert link.backoff_ms(0, lambda: 1.0) == 1000
    assert link.backoff_ms(99, lambda: 0.0) == b[-1] * 500
    assert link.backoff_ms(99, lambda: 0.999) < b[-1] * 1000


def test_outbox_is_bounded_and_counts_what_it_drops():
    ob = link.Outbox(size=4)
    for i in range(10):
        ob.put(P.EVENT, "e" + str(i))
    assert [p for _, p in ob.queue] == ["e6", "e7", "e8", "e9"]
    assert ob.dropped == 6


def test_outbox_coalesces_state_and_telemetry_and_sends_acks_first():
    ob = link.Outbox()
    for i in range(50):
        ob.put(P.TELEMETRY, "t" + str(i))
        ob.put(P.PUMP_STATE, "ON" if i % 2 else "OFF")
    ob.put(P.ACK, "a1")
    assert len(ob) == 3 and ob.dropped == 0
    item = ob.peek()
    assert item == (P.ACK, "a1")
    ob.done(item)
    seen = {}
    while len(ob):
        item = ob.peek()
        seen[item[0]] = item[1]
        ob.done(item)
    assert seen == {P.TELEMETRY: "t49", P.PUMP_STATE: "ON"}


def test_outbox_keeps_a_value_that_changed_while_it_was_being_sent():
    ob = link.Outbox()
    ob.put(P.PUMP_STATE, "ON")
    item = ob.peek()
    ob.put(P.PUMP_STATE, "OFF")  # while the publish of "ON" was in flight
    ob.done(item)
    assert ob.peek() == (P.PUMP_STATE, "OFF")
