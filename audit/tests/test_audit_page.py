"""The audit page and its CSV export: admins and owners only, own tenant only."""

import csv
import datetime as dt
import io
import json

import pytest
from django.urls import reverse
from django.utils import timezone

from audit.models import AuditEvent
from audit.services import audit_record
from audit.views import PAGE_SIZE

pytestmark = pytest.mark.django_db

AUDIT = "/audit/"
EXPORT = "/audit/export.csv"


@pytest.fixture
def trail(alice, adam, olivia, carol, monkeypatch):
    """Events of both tenants: tenant A's on three days, carol's of tenant B now."""
    now = timezone.now()

    def at(moment, **kwargs):
        with monkeypatch.context() as patch:
            patch.setattr(timezone, "now", lambda: moment)
            return audit_record(**kwargs)

    a = alice.tenant
    at(now - dt.timedelta(days=10), action="pool.created", tenant=a, actor=alice.user)
    at(now - dt.timedelta(days=3), action="broker.changed", tenant=a, actor=adam.user)
    at(now, action="membership.role_changed", tenant=a, actor=alice.user, target=olivia)
    at(now, action="command.sent", tenant=a, actor=olivia.user, data={"op": "pump"})
    at(
        now,
        action="carol.only",
        tenant=carol.tenant,
        actor=carol.user,
        data={"secret": "globex-private"},
    )
    return now


def rows(response) -> list[dict]:
    body = b"".join(response.streaming_content).decode()
    return list(csv.DictReader(io.StringIO(body)))


def test_owner_sees_own_tenant_events_only(login, alice, trail):
    response = login(alice).get(AUDIT)
    assert response.status_code == 200
    html = response.content.decode()
    for action in ("pool.created", "broker.changed", "membership.role_changed"):
        assert action in html
    assert "carol.only" not in html
    assert "globex-private" not in html
    assert "carol@globex.test" not in html
    assert list(response.context["page"].object_list) == list(
        AuditEvent.objects.filter(tenant=alice.tenant).order_by("-created_at", "-seq")
    )


def test_admin_sees_the_page(login, adam, trail):
    assert login(adam).get(AUDIT).status_code == 200


def test_carol_sees_only_her_tenant(login, carol, trail):
    response = login(carol).get(AUDIT)
    html = response.content.decode()
    assert "carol.only" in html
    assert "pool.created" not in html
    assert "alice@acme.test" not in html


@pytest.mark.parametrize("persona", ["olivia", "victor"])
@pytest.mark.parametrize("url", [AUDIT, EXPORT])
def test_operator_and_viewer_are_forbidden(request, login, trail, persona, url):
    member = request.getfixturevalue(persona)
    response = login(member).get(url)
    assert response.status_code == 403
    assert b"pool.created" not in response.content


def test_nav_links_audit_for_managers_only(login, alice, olivia):
    assert b'href="/audit/"' in login(alice).get(reverse("team")).content
    assert b'href="/audit/"' not in login(olivia).get(reverse("team")).content


def test_needs_login_and_a_tenant(client, make_user):
    assert client.get(AUDIT).status_code == 302
    client.force_login(make_user("lonely@nowhere.test"))
    assert client.get(AUDIT).status_code == 404
    assert client.get(EXPORT).status_code == 404


def test_suspended_tenant_is_refused(login, alice, trail):
    alice.tenant.status = "suspended"
    alice.tenant.save()
    client = login(alice)
    for url in (AUDIT, EXPORT):
        response = client.get(url)
        assert response.status_code == 403
        assert b"is suspended" in response.content


def test_filter_by_action(login, alice, trail):
    response = login(alice).get(AUDIT, {"action": "broker.changed"})
    events = list(response.context["page"].object_list)
    assert [e.action for e in events] == ["broker.changed"]


def test_action_choices_are_the_tenants_own(login, alice, trail):
    html = login(alice).get(AUDIT).content.decode()
    assert '<option value="pool.created"' in html
    assert "carol.only" not in html


def test_filter_by_actor(login, alice, trail):
    response = login(alice).get(AUDIT, {"actor": "OLIVIA"})
    events = list(response.context["page"].object_list)
    assert [e.action for e in events] == ["command.sent"]


def test_filter_by_date_range(login, alice, trail):
    client = login(alice)
    today = trail.date()

    def actions(**params):
        page = client.get(AUDIT, params).context["page"]
        return sorted(e.action for e in page.object_list)

    four_days_ago = (today - dt.timedelta(days=4)).isoformat()
    two_days_ago = (today - dt.timedelta(days=2)).isoformat()
    assert actions(since=four_days_ago) == [
        "broker.changed",
        "command.sent",
        "membership.role_changed",
    ]
    assert actions(since=four_days_ago, until=two_days_ago) == ["broker.changed"]
    # "To" includes the whole day.
    assert actions(until=(today - dt.timedelta(days=3)).isoformat()) == [
        "broker.changed",
        "pool.created",
    ]
    assert actions(since=(today + dt.timedelta(days=1)).isoformat()) == []


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"since": "yesterday"}, b"Enter a valid date."),
        ({"since": "2026-05-02", "until": "2026-05-01"}, b"end date is before"),
        ({"action": "carol.only"}, b"Select a valid choice."),
        # The day after 9999-12-31 does not exist: it used to answer 500.
        ({"until": "9999-12-31"}, b"Enter a date between 2000-01-01 and 2999-12-31."),
        ({"since": "9999-12-31"}, b"Enter a date between 2000-01-01 and 2999-12-31."),
        ({"since": "0001-01-01"}, b"Enter a date between 2000-01-01 and 2999-12-31."),
        ({"until": "1999-12-31"}, b"Enter a date between 2000-01-01 and 2999-12-31."),
        ({"until": "10000-01-01"}, b"Enter a valid date."),
        ({"since": "2026-02-30"}, b"Enter a valid date."),
        ({"since": "\u00b2\u00b2\u00b2\u00b2-01-01"}, b"Enter a valid date."),
        ({"since": "9" * 5000}, b"Enter a valid date."),
        ({"actor": "a\x00b"}, b"Null characters are not allowed."),
        ({"actor": "x" * 255}, b"at most 254 characters"),
        ({"action": "' OR 1=1 --"}, b"Select a valid choice."),
    ],
)
@pytest.mark.parametrize("url", [AUDIT, EXPORT])
def test_bad_filters_are_refused(login, alice, trail, params, message, url):
    response = login(alice).get(url, params)
    assert response.status_code == 400
    assert message in response.content
    assert b"carol.only</span>" not in response.content
    assert b"pool.created</span>" not in response.content


def test_pagination_keeps_filters(login, alice, django_assert_max_num_queries):
    size = PAGE_SIZE
    for n in range(size + 10):
        audit_record(
            action="pool.updated", tenant=alice.tenant, actor=alice.user, data={"n": n}
        )
    audit_record(action="other", tenant=alice.tenant, actor=alice.user)
    client = login(alice)
    with django_assert_max_num_queries(10):
        first = client.get(AUDIT, {"action": "pool.updated"})
    assert len(first.context["page"].object_list) == size
    assert first.context["page"].paginator.count == size + 10
    html = first.content.decode()
    assert "action=pool.updated&amp;page=2" in html
    assert f"{size + 10} events match these filters" in html
    second = client.get(AUDIT, {"action": "pool.updated", "page": 2})
    assert len(second.context["page"].object_list) == 10
    assert {e.action for e in second.context["page"].object_list} == {"pool.updated"}
    # A page past the end, or not a number, shows a page rather than an error.
    assert client.get(AUDIT, {"page": 99}).status_code == 200
    assert client.get(AUDIT, {"page": "x'--"}).status_code == 200


def test_empty_trail_says_so(login, alice):
    # Logging in through force_login writes no event, so the trail is empty.
    response = login(alice).get(AUDIT, {"actor": "nobody"})
    assert b"No events match these filters." in response.content


# --- CSV export ----------------------------------------------------------------------


def test_export_contains_own_events_with_columns(login, alice, trail):
    response = login(alice).get(EXPORT)
    assert response.status_code == 200
    assert response["Content-Type"] == "text/csv; charset=utf-8"
    assert response["Content-Disposition"].startswith(
        'attachment; filename="audit-acme-'
    )
    exported = rows(response)
    expected = AuditEvent.objects.filter(tenant=alice.tenant).order_by(
        "-created_at", "-seq"
    )
    assert [r["event_code"] for r in exported] == [str(e.code) for e in expected]
    assert "carol.only" not in {r["action"] for r in exported}
    command = next(r for r in exported if r["action"] == "command.sent")
    assert command["actor"] == "olivia@acme.test"
    assert json.loads(command["data"]) == {"op": "pump"}
    event = AuditEvent.objects.get(action="command.sent")
    assert command["hash"] == event.hash
    assert command["seq"] == str(event.seq)
    assert command["time"] == event.created_at.isoformat()


def test_export_uses_the_same_filters(login, alice, trail):
    exported = rows(login(alice).get(EXPORT, {"actor": "adam"}))
    assert [r["action"] for r in exported] == ["broker.changed"]


def test_carol_export_has_only_her_events(login, carol, trail):
    exported = rows(login(carol).get(EXPORT))
    assert [r["action"] for r in exported] == ["carol.only"]


def test_export_defuses_spreadsheet_formulas(login, alice, make_member):
    # A name a user typed ends up in target labels; it must not run as a formula.
    victim = make_member(alice.tenant, "formula@acme.test", "viewer")
    victim.user.email = '=HYPERLINK("http://evil.test")@acme.test'
    audit_record(
        action="membership.removed",
        tenant=alice.tenant,
        actor=alice.user,
        target=victim.user,
        data={},
    )
    exported = rows(login(alice).get(EXPORT))
    (row,) = [r for r in exported if r["action"] == "membership.removed"]
    assert row["target"].startswith("'=HYPERLINK")
