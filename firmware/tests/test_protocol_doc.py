"""docs/protocol.md and firmware/protocol.py say the same thing.

The spec is prose and tables; the code is what the bridge and the devices run. These
tests read the tables and examples of the spec and hold them against the code, so that
one cannot change without the other. CPython only (reads the docs tree).
"""

import json
import re
from pathlib import Path

import pytest

from firmware import protocol as P

ROOT = Path(__file__).resolve().parents[2]
DOC = (ROOT / "docs" / "protocol.md").read_text(encoding="utf-8")
V31 = ROOT.parent / "shared" / "design" / "PROTOCOL-v3.1.md"


def section(title):
    """The text of the markdown section whose heading starts with title."""
    m = re.search(r"^(#+) " + re.escape(title) + r".*$", DOC, re.M)
    assert m, title
    level = len(m.group(1))
    rest = DOC[m.end() :]
    end = re.search("^#{1," + str(level) + "} ", rest, re.M)
    return rest[: end.start()] if end else rest


def table_rows(text):
    rows = []
    for line in text.splitlines():
        if line.startswith("|") and not line.startswith("| ---"):
            rows.append([c.strip() for c in line.strip().strip("|").split("|")])
    return rows[1:]  # without the header


def json_blocks(text):
    out = []
    for block in re.findall(r"```json\n(.*?)```", text, re.S):
        # A block holds one or more JSON objects one after the other.
        decoder = json.JSONDecoder()
        i = 0
        while block[i:].strip():
            while block[i].isspace():
                i += 1
            obj, i = decoder.raw_decode(block, i)
            out.append(obj)
    return out


@pytest.mark.skipif(not V31.exists(), reason="shared design docs not checked out")
def test_v31_contract_is_included_word_for_word():
    v31 = V31.read_text(encoding="utf-8").strip()
    demoted = re.sub(
        r"^(#+) ", lambda m: "#" * (len(m.group(1)) + 2) + " ", v31, flags=re.M
    )
    assert demoted in DOC


def test_ps1_device_to_cloud_table_matches_publish_opts():
    rows = table_rows(section("3.1 Device to cloud").split("**`telemetry`**")[0])
    seen = {}
    for suffix, qos, retain, *_ in rows:
        seen[suffix.strip("`")] = (retain == "yes", int(qos))
    assert seen == {s: P.PUBLISH_OPTS[s] for s in P.PS1_DEVICE_TO_CLOUD}
    # v3.1 state topics: "all retained", QoS 0 (what a v3.1 device uses).
    for s in P.V31_DEVICE_TO_CLOUD:
        assert P.PUBLISH_OPTS[s] == (True, 0)
    assert set(P.PUBLISH_OPTS) == set(P.DEVICE_TO_CLOUD)


def test_v31_validation_table_covers_every_v31_suffix():
    rows = table_rows(section("2.2 How poolsaas validates"))
    assert [r[0].strip("`") for r in rows] == list(P.V31_DEVICE_TO_CLOUD)


def test_cloud_to_device_table_and_subscriptions():
    rows = table_rows(section("3.2 Cloud to device"))
    suffixes = [r[0].strip("`") for r in rows]
    assert suffixes[:2] == list(P.PS1_CLOUD_TO_DEVICE)
    assert [(r[1], r[2]) for r in rows[:2]] == [("1", "no"), ("1", "yes")]
    subs = section("5. Subscriptions")
    for s in P.DEVICE_SUBSCRIPTIONS:
        assert f"`<root>/{s}`" in subs


def test_enumerations_match():
    ack = section("3.1 Device to cloud")
    errors = re.search(r"one of (`[a-z_]+`(?:, `[a-z_]+`)*)", ack).group(1)
    assert tuple(re.findall(r"`([a-z_]+)`", errors)) == P.ACK_ERRORS
    events = re.search(r"`type` one of:\n(.*?)\n\n", ack, re.S).group(1)
    types = []
    for row in table_rows(events):
        types += re.findall(r"`([a-z_]+)`", row[0])
    assert tuple(types) == P.EVENT_TYPES
    reasons = re.search(r"`reason` is (.*?) \|", ack).group(1)
    assert tuple(re.findall(r"`([a-z_]+)`", reasons)) == P.TIMER_END_REASONS
    ops = [r for r in table_rows(section("3.2 Cloud to device")) if r[0] == "`op`"][0]
    assert tuple(re.findall(r"`([a-z_]+)`", ops[2])) == P.OPS
    assert f"at most {P.MAX_PAYLOAD} bytes" in DOC


def test_every_json_example_is_valid():
    ps1 = section("3. ps1 additions")
    examples = json_blocks(ps1)
    by_shape = {
        "telemetry": [e for e in examples if "seq" in e],
        "ack": [e for e in examples if "ok" in e and "id" in e],
        "config_applied": [e for e in examples if "ok" in e and "version" in e],
        "event": [e for e in examples if "type" in e and "ts" in e],
        "cmd": [e for e in examples if "op" in e],
        "config": [e for e in examples if "tz_posix" in e],
    }
    assert all(by_shape.values()), {k: len(v) for k, v in by_shape.items()}
    for kind, suffix in (
        ("telemetry", "telemetry"),
        ("ack", "ack"),
        ("config_applied", "config/applied"),
        ("event", "event"),
    ):
        for e in by_shape[kind]:
            assert P.parse_device_message(suffix, P.dumps(e))[0] == kind
    for e in by_shape["cmd"]:
        assert P.parse_command(P.dumps(e))["op"] == e["op"]
    for e in by_shape["config"]:
        assert P.parse_config(P.dumps(e)) == P.validate_config(e)
    (bundle,) = json_blocks(section("7. Provisioning bundle"))
    assert P.parse_bundle(P.dumps(bundle))["device_id"] == bundle["device_id"]


def test_telemetry_keys_are_the_documented_ones():
    rows = table_rows(section("3.1 Device to cloud").split("**`telemetry`**")[1])
    keys = []
    for row in rows:
        if row[0].startswith("`"):
            keys.append(row[0].strip("`"))
        if row[0] == "`switches`":
            break
    (example,) = json_blocks(section("3.1 Device to cloud").split("**`ack`**")[0])
    assert keys == list(example) == list(P.parse_telemetry(P.dumps(example)))


def test_v31_set_mapping_table_matches_encoder():
    rows = table_rows(section("4. Server side"))
    text = " ".join(r[1] for r in rows)
    for op, value in (
        ("pump", "ON"),
        ("valve", 1),
        ("timer", {"mode": 1, "duration": 9}),
    ):
        suffix, _ = P.encode_v31_set(op, value)
        assert f"`{suffix}`" in text
    assert P.encode_v31_set("wifi_clear") == ("wifi/clear", b"1")
    for op in ("override_clear", "reboot"):
        with pytest.raises(P.ProtocolError) as e:
            P.encode_v31_set(op)
        assert e.value.code == "unsupported"
