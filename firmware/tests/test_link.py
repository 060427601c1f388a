"""firmware.link: the pure network choice (CPython and MicroPython)."""

try:
    from firmware import link
except ImportError:  # MicroPython: flat filesystem
    import link

NETS = [("Pool", "pw1"), ("House", "pw2"), ("Garage", "pw3")]


def test_networks_on_the_air_in_configured_priority():
    assert link.pick_networks(NETS, ["Garage", "Neighbour", "Pool"]) == [
        ("Pool", "pw1"),
        ("Garage", "pw3"),
    ]


def test_hidden_networks_are_still_tried_when_the_scan_sees_none():
    assert link.pick_networks(NETS, ["Neighbour"]) == NETS
    assert link.pick_networks(NETS, []) == NETS


def test_backoff_grows_and_caps():
    b = link.BACKOFF_S
    assert list(b) == sorted(b) and b[-1] == 60
