"""The audit page says what happened in words: events written by the real services,
read back through the page, with the pool's own names; unknown actions fall back to
readable pairs; whatever a user typed stays text."""

import re

import pytest
from django.utils.html import strip_tags

from audit.details import RENDERERS, action_label, event_details
from audit.models import AuditEvent
from audit.services import audit_record
from devices.services.brokers import broker_create, broker_delete, broker_update
from devices.services.claims import claim_code_for
from devices.services.commands import command_send
from devices.services.onboarding import device_add, device_remove
from devices.services.pools import pool_create, pool_update
from devices.services.programs import programs_save
from tenants.services import invitation_create, membership_role_change

pytestmark = pytest.mark.django_db

AUDIT = "/audit/"


def _cells(response) -> list[tuple[str, str]]:
    """(what, details) of each row, as the reader sees them."""
    html = response.content.decode()
    rows = re.findall(
        r'<td data-label="What" class="what"><span class="action"[^>]*>(.*?)</span>'
        r'.*?<td data-label="Details" class="details">(.*?)</td>',
        html,
        flags=re.S,
    )
    return [(strip_tags(what).strip(), strip_tags(text).strip()) for what, text in rows]


def _details_of(response, label: str) -> list[str]:
    return [text for what, text in _cells(response) if what == label]


def _day(mode, start, stop):
    return {"mode": mode, "start": start, "stop": stop}


@pytest.fixture
def acme_story(alice, olivia, platform_broker, settings):
    """A day at Acme, written by the services the pages and the API call."""
    settings.BROKER_ALLOW_PRIVATE_HOSTS = True
    pool = pool_create(
        membership=alice,
        name="Villa Azul",
        timezone_name="Europe/Madrid",
        mode1_name="Cascada",
        mode2_name="Jets",
    )
    pool_update(membership=alice, pool=pool, timezone_name="Atlantic/Canary")
    weekday = _day(1, "08:00", "10:00")
    programs_save(
        membership=alice,
        pool=pool,
        programs=[
            {"slot": 1, "enabled": True, "days": [weekday] * 5 + [None, None]},
            {"slot": 2, "enabled": False, "days": [None] * 7},
        ],
    )
    programs_save(
        membership=alice,
        pool=pool,
        programs=[
            {"slot": 1, "enabled": True, "days": [weekday] * 5 + [None, None]},
            {
                "slot": 2,
                "enabled": True,
                "days": [None] * 6 + [_day(2, "18:00", "19:30")],
            },
        ],
    )
    device, _bundle = device_add(
        membership=alice,
        pool=pool,
        device_id="ESP-AB12CD",
        claim_code=claim_code_for("ESP-AB12CD"),
    )
    command_send(membership=olivia, pool=pool, op="valve", value=2, source="web")
    command_send(
        membership=olivia,
        pool=pool,
        op="timer",
        value={"mode": 1, "duration": 1800},
        source="api",
    )
    broker = broker_create(
        membership=alice,
        name="Acme own",
        host="127.0.0.1",
        port=1884,
        use_tls=False,
        topic_prefix="acme",
        username="u",
        password="p",
    )
    broker_update(membership=alice, broker=broker, port=1885, username="u", password="")
    broker_delete(membership=alice, broker=broker)
    device_remove(membership=alice, device=device)
    invitation_create(membership=alice, email="newbie@acme.test", role="viewer")
    membership_role_change(membership=alice, target=olivia, role="admin")
    return pool


def test_every_action_of_the_services_reads_as_words(login, alice, acme_story):
    page = login(alice).get(AUDIT)
    assert page.status_code == 200
    assert _details_of(page, "Pool created") == ["Time zone Europe/Madrid"]
    assert _details_of(page, "Pool settings changed") == [
        "Time zone: Europe/Madrid → Atlantic/Canary"
    ]
    assert _details_of(page, "Programs changed") == [
        # Newest first: the second save only changed program 2.
        "Version 3. Program 2: Sun 18:00–19:30 Jets.",
        "Version 2. Program 1: Mon–Fri 08:00–10:00 Cascada. Program 2: off.",
    ]
    assert _details_of(page, "Device added") == [
        "ESP-AB12CD (ps1) in Villa Azul on broker poolsaas platform broker. "
        "No MQTT password."
    ]
    assert _details_of(page, "Command") == [
        # The device never connected, so the service fails the commands at once.
        "Timer 30 min in Cascada on Villa Azul, device ESP-AB12CD (via api): "
        "failed — The device is offline",
        "Valve to Jets on Villa Azul, device ESP-AB12CD (via web): "
        "failed — The device is offline",
    ]
    assert _details_of(page, "Broker added") == [
        "127.0.0.1:1884, TLS off. Username and password set."
    ]
    assert _details_of(page, "Broker changed") == ["Changed: port"]
    assert _details_of(page, "Broker credentials changed") == ["Password cleared"]
    assert _details_of(page, "Broker deleted") == ["127.0.0.1:1885"]
    assert _details_of(page, "Device removed") == [
        "ESP-AB12CD (ps1) removed from Villa Azul"
    ]
    assert _details_of(page, "Invitation sent") == [
        "newbie@acme.test invited as Viewer"
    ]
    assert _details_of(page, "Role changed") == ["olivia@acme.test: Operator → Admin"]
    html = page.content.decode()
    # No internal dict or code leaks into the page any more.
    assert "{'" not in html and "&#x27;slot&#x27;" not in html
    assert acme_story.code.hex not in html


def test_every_service_action_has_a_renderer(login, alice, acme_story):
    written = set(AuditEvent.objects.values_list("action", flat=True))
    assert written - set(RENDERERS) == set()


def test_another_tenants_pool_is_never_named(login, carol, alice, acme_story):
    # An event of Globex that refers to Acme's pool (it cannot happen through the
    # services; the lookup must still be scoped): the name does not leak.
    audit_record(
        action="command.sent",
        tenant=carol.tenant,
        actor=carol.user,
        data={"pool": acme_story.code.hex, "device": "ESP-X", "op": "reboot"},
    )
    page = login(carol).get(AUDIT)
    assert _details_of(page, "Command") == ["Reboot on device ESP-X"]
    assert b"Villa Azul" not in page.content


def test_unknown_action_falls_back_to_readable_pairs(login, alice):
    audit_record(
        action="otp.device_confirmed",
        tenant=alice.tenant,
        actor=alice.user,
        data={"device_name": "Phone", "backup_codes": 10, "methods": ["totp", "sms"]},
    )
    page = login(alice).get(AUDIT)
    assert _cells(page) == [
        (
            "Otp device confirmed",
            "backup codes: 10; device name: Phone; methods: totp, sms",
        )
    ]


def test_unexpected_data_shape_falls_back_instead_of_failing(alice):
    event = audit_record(
        action="programs.updated",
        tenant=alice.tenant,
        actor=alice.user,
        data={"before": "garbage", "after": 3},
    )
    assert event_details(event) == "after: 3; before: garbage"


def test_typed_text_stays_text(login, alice):
    audit_record(
        action="invitation.created",
        tenant=alice.tenant,
        actor=alice.user,
        data={"email": "<script>alert(1)</script>@x.test", "role": "viewer"},
    )
    audit_record(
        action="made.up",
        tenant=alice.tenant,
        actor=alice.user,
        data={"<b>key</b>": "<img src=x onerror=alert(2)>"},
    )
    html = login(alice).get(AUDIT).content.decode()
    assert "<script>alert(1)" not in html
    assert "<img src=x" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;@x.test invited as Viewer" in html
    assert "&lt;b&gt;key&lt;/b&gt;: &lt;img src=x onerror=alert(2)&gt;" in html


def test_long_details_are_clipped(alice):
    event = audit_record(
        action="made.up", tenant=alice.tenant, actor=alice.user, data={"x": "y" * 2000}
    )
    text = event_details(event)
    assert len(text) == 400 and text.endswith("…")


@pytest.mark.parametrize(
    ("action", "label"),
    [
        ("programs.updated", "Programs changed"),
        ("admin.changed", "Staff changed (admin)"),
        ("session.revoked_all", "Session revoked all"),
        ("", "—"),
    ],
)
def test_action_labels(action, label):
    assert action_label(action) == label


def test_filter_offers_labels_and_keeps_codes(login, alice, acme_story):
    html = login(alice).get(AUDIT).content.decode()
    assert '<option value="programs.updated">Programs changed</option>' in html
