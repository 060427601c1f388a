"""Each member's alert preferences page (/alerts/preferences/): any role saves
their own (audited), bad input is a 400 with the reason and changes nothing, the
page says what happens without saved preferences, and it fits a phone."""

import datetime as dt
import re

import pytest

from alerts.models import AlertPreference
from alerts.services import alert_preference_set
from audit.models import AuditEvent

pytestmark = pytest.mark.django_db
URL = "/alerts/preferences/"

GOOD = {
    "channel": "email",
    "kinds": ["freeze_risk", "water_above"],
    "quiet_start": "22:00",
    "quiet_end": "07:00",
    "safety_ignores_quiet": "on",
}


def test_empty_states_say_what_each_role_gets(login, alice, victor):
    owner = login(alice).get(URL)
    assert owner.status_code == 200
    assert "every alert by e-mail, at any hour" in owner.content.decode()
    viewer = login(victor).get(URL).content.decode()
    assert "you get no e-mail" in viewer
    box = re.search(r'<input[^>]*name="safety_ignores_quiet"[^>]*>', viewer).group(0)
    assert "checked" in box  # on by default


def test_a_viewer_saves_their_own_and_it_is_audited(login, victor, alice):
    response = login(victor).post(URL, GOOD)
    assert response.status_code == 302 and response.url == URL
    pref = AlertPreference.objects.get(membership=victor)
    assert (pref.channel, pref.kinds, pref.quiet_start, pref.quiet_end) == (
        "email",
        ["freeze_risk", "water_above"],
        dt.time(22, 0),
        dt.time(7, 0),
    )
    assert pref.safety_ignores_quiet is True
    assert not AlertPreference.objects.filter(membership=alice).exists()
    event = AuditEvent.objects.get(action="alert_preference.changed")
    assert event.actor_id == victor.user_id and event.tenant_id == victor.tenant_id
    # The saved values are shown back, and saving them again writes no event.
    page = login(victor).get(URL).content.decode()
    assert 'value="22:00"' in page and 'value="07:00"' in page
    assert "You have not saved preferences" not in page
    login(victor).post(URL, GOOD)
    assert AuditEvent.objects.filter(action="alert_preference.changed").count() == 1


def test_unticked_safety_override_and_dashboard_only(login, alice):
    data = {**GOOD, "channel": "none"}
    del data["safety_ignores_quiet"]
    assert login(alice).post(URL, data).status_code == 302
    pref = AlertPreference.objects.get(membership=alice)
    assert (pref.channel, pref.safety_ignores_quiet) == ("none", False)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"quiet_end": ""}, "Give both ends of the quiet hours, or neither."),
        ({"quiet_end": "22:00"}, "cannot start and end at the same time"),
        ({"quiet_start": "25:00"}, "Enter a valid time."),
        ({"kinds": ["freeze_risk", "nonsense"]}, "Select a valid choice."),
        ({"channel": "sms"}, "Select a valid choice."),
    ],
)
def test_bad_input_is_a_400_and_changes_nothing(login, alice, change, message):
    before = alert_preference_set(membership=alice, channel="email")
    response = login(alice).post(URL, {**GOOD, **change})
    assert response.status_code == 400
    assert message in response.content.decode()
    after = AlertPreference.objects.get(membership=alice)
    assert (after.kinds, after.quiet_start, after.updated_at) == (
        [],
        None,
        before.updated_at,
    )


def test_another_tenants_member_sees_only_their_own(login, alice, carol):
    alert_preference_set(membership=alice, channel="none", kinds=["freeze_risk"])
    page = login(carol).get(URL).content.decode()
    assert "You have not saved preferences" in page
    login(carol).post(URL, GOOD)
    assert AlertPreference.objects.get(membership=alice).channel == "none"
    assert AlertPreference.objects.get(membership=carol).channel == "email"


def test_linked_from_the_alerts_page(login, victor):
    assert URL in login(victor).get("/alerts/").content.decode()
