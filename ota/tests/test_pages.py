"""The OTA pages: releases (platform ones for all, the tenant's own for admins when
the plan allows), a campaign previewed then created, its progress page and buttons,
a device's history on its pages, consent on the pool page; roles, another tenant's
objects answering like made-up ones, bad input changing nothing, audit events."""

import uuid

import pytest
from django.urls import reverse

from audit.models import AuditEvent
from devices.models import Device
from ota.models import Campaign, Release
from ota.tests.web_fixtures import *  # noqa: F403
from ota.tests.web_fixtures import make_campaign, report, upload

pytestmark = pytest.mark.django_db


# --- releases -------------------------------------------------------------------


def test_releases_empty_state(login, victor, media):
    page = login(victor).get(reverse("ota_releases"))
    assert page.status_code == 200
    assert b"No releases yet" in page.content
    assert b"Upload a release" not in page.content


def test_viewer_sees_the_platform_release_but_no_buttons(
    login, victor, platform_release, own_release
):
    page = login(victor).get(reverse("ota_releases")).content.decode()
    assert "esp32 1.4.0" in page and "platform" in page
    assert "esp32 1.5.0" in page and "yours" in page
    assert platform_release.sha256[:12] in page
    assert "Retire" not in page and "Upload a release" not in page


def test_another_tenants_release_is_not_listed(login, carol, own_release):
    page = login(carol).get(reverse("ota_releases")).content.decode()
    assert "1.5.0" not in page


def test_admin_uploads_a_release_audited(login, adam, media):
    client = login(adam)
    assert b"Upload a release" in client.get(reverse("ota_releases")).content
    response = client.post(
        reverse("ota_release_add"),
        {
            "file": upload(),
            "version": "2.0.0",
            "hardware_model": "esp32",
            "min_from_version": "1.0.0",
            "notes": "Hi",
        },
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    release = Release.objects.get(version="2.0.0")
    assert release.tenant_id == adam.tenant_id
    assert (release.size, release.chunk_count) == (len(BLOB), 3)  # noqa: F405
    assert AuditEvent.objects.filter(
        action="ota.release_create", tenant=adam.tenant
    ).exists()


@pytest.mark.parametrize(
    "data, message",
    [
        ({"version": "2.0"}, "MAJOR.MINOR.PATCH"),
        ({"min_from_version": "x"}, "MAJOR.MINOR.PATCH"),
        ({"file": None}, "This field is required"),
    ],
)
def test_bad_upload_is_a_400_and_stores_nothing(login, adam, media, data, message):
    form = {"file": upload(), "version": "2.0.0", "hardware_model": "esp32", **data}
    form = {k: v for k, v in form.items() if v is not None}
    response = login(adam).post(reverse("ota_release_add"), form)
    assert response.status_code == 400
    assert message in response.content.decode()
    assert not Release.objects.exists()


def test_empty_file_is_refused_by_the_engine(login, adam, media):
    response = login(adam).post(
        reverse("ota_release_add"),
        {"file": upload(b""), "version": "2.0.0", "hardware_model": "esp32"},
    )
    assert response.status_code == 400
    assert not Release.objects.exists()


def test_operator_cannot_upload(login, olivia, media):
    client = login(olivia)
    assert client.get(reverse("ota_release_add")).status_code == 403
    response = client.post(
        reverse("ota_release_add"),
        {"file": upload(), "version": "2.0.0", "hardware_model": "esp32"},
    )
    assert response.status_code == 403
    assert not Release.objects.exists()


def test_plan_without_own_releases_hides_them(login, adam, own_release):
    from billing.models import Plan

    plan = Plan.objects.create(code="tiny-ota", name="Tiny")
    adam.tenant.plan = plan
    adam.tenant.save()
    client = login(adam)
    page = client.get(reverse("ota_releases")).content.decode()
    assert "1.5.0" not in page and "Upload a release" not in page
    response = client.get(reverse("ota_release_add"))
    assert response.status_code == 403
    assert b"Your plan does not include releases" in response.content
    plan.ota_own_releases = True
    plan.save()
    page = client.get(reverse("ota_releases")).content.decode()
    assert "1.5.0" in page and "Upload a release" in page
    assert client.get(reverse("ota_release_add")).status_code == 200


def test_the_business_plan_includes_own_releases(db):
    from billing.models import Plan

    assert set(
        Plan.objects.filter(ota_own_releases=True).values_list("code", flat=True)
    ) == {"business"}


def test_admin_retires_own_release_audited(login, adam, own_release):
    response = login(adam).post(reverse("ota_release_retire", args=[own_release.code]))
    assert response.status_code == 302
    own_release.refresh_from_db()
    assert own_release.retired
    assert AuditEvent.objects.filter(action="ota.release_retire").exists()


def test_platform_release_cannot_be_retired_by_a_tenant(login, alice, platform_release):
    response = login(alice).post(
        reverse("ota_release_retire", args=[platform_release.code])
    )
    assert response.status_code == 403
    platform_release.refresh_from_db()
    assert not platform_release.retired


def test_foreign_release_answers_like_a_made_up_one(login, carol, own_release):
    client = login(carol)
    answers = [
        client.post(reverse("ota_release_retire", args=[code]))
        for code in (own_release.code, uuid.uuid4(), "not-a-code")
    ]
    assert answers[0].status_code == 404
    assert answers[0].content == answers[1].content == answers[2].content
    own_release.refresh_from_db()
    assert not own_release.retired


# --- campaigns ------------------------------------------------------------------


def test_campaigns_empty_state(login, victor):
    page = login(victor).get(reverse("ota_campaigns"))
    assert page.status_code == 200
    assert b"No campaigns yet" in page.content
    assert b"New campaign" not in page.content


def _form(chosen, **extra):
    data = {
        "release": chosen.code,
        "target": "all",
        "rate_per_minute": 10,
        "growth_factor": 1,
        "abort_after": 5,
        "abort_percent": 20,
        "retries": 2,
        "max_attempts_per_day": 3,
        "step": "preview",
    }
    data.update(extra)
    return data


def test_preview_then_create(login, adam, platform_release, fleet):
    old, current = fleet
    client = login(adam)
    page = client.get(reverse("ota_campaign_add"))
    assert page.status_code == 200 and b"Preview" in page.content
    preview = client.post(reverse("ota_campaign_add"), _form(platform_release))
    assert preview.status_code == 200
    html = preview.content.decode()
    assert '<strong id="preview-matched">1</strong>' in html
    assert '<strong id="preview-skipped">1</strong>' in html
    assert current.device_id in html and "current" in html
    assert 'id="campaign-create"' in html
    assert not Campaign.objects.exists()  # a preview creates nothing
    response = client.post(
        reverse("ota_campaign_add"), _form(platform_release, step="create")
    )
    assert response.status_code == 302
    campaign = Campaign.objects.get()
    assert response.url == reverse("ota_campaign_detail", args=[campaign.code])
    assert campaign.tenant_id == adam.tenant_id and campaign.state == "draft"
    assert AuditEvent.objects.filter(action="ota.campaign_create").exists()


def test_preview_of_chosen_pools_only(login, adam, platform_release, fleet, pool_a):
    html = (
        login(adam)
        .post(
            reverse("ota_campaign_add"),
            _form(platform_release, target="pools", pools=[pool_a.code]),
        )
        .content.decode()
    )
    assert '<strong id="preview-matched">1</strong>' in html
    assert '<strong id="preview-skipped">0</strong>' in html


@pytest.mark.parametrize(
    "extra, message",
    [
        ({"target": "pools"}, "Choose at least one pool."),
        ({"target": "devices"}, "Choose at least one device."),
        ({"rate_per_minute": -1}, "greater than or equal to 0"),
        ({"abort_percent": 0}, "greater than or equal to 1"),
        ({"window_start": "02:00"}, "both ends"),
        ({"below_version": "two"}, "MAJOR.MINOR.PATCH"),
        ({"release": "not-a-code"}, "is not a valid UUID"),
    ],
)
def test_bad_campaign_input_is_a_400_and_creates_nothing(
    login, adam, platform_release, fleet, extra, message
):
    for step in ("preview", "create"):
        response = login(adam).post(
            reverse("ota_campaign_add"), _form(platform_release, step=step, **extra)
        )
        assert response.status_code == 400, (extra, step)
        assert message in response.content.decode(), (extra, step)
    assert not Campaign.objects.exists()


def test_foreign_pools_and_releases_are_not_offered(
    login, adam, carol, platform_release, fleet, pool_b, media
):
    from ota.services import release_create

    theirs = release_create(
        upload=upload(), version="9.9.9", hardware_model="esp32", tenant=carol.tenant
    )
    client = login(adam)
    html = client.get(reverse("ota_campaign_add")).content.decode()
    assert str(pool_b.code) not in html and "9.9.9" not in html
    for extra in (
        {"release": theirs.code},
        {"target": "pools", "pools": [pool_b.code]},
    ):
        response = client.post(
            reverse("ota_campaign_add"), _form(platform_release, step="create", **extra)
        )
        assert response.status_code == 400
        assert b"Select a valid choice" in response.content
    assert not Campaign.objects.exists()


def test_retired_release_is_not_offered(login, adam, own_release, fleet):
    from ota.services import release_retire

    release_retire(actor=adam.user, release=own_release)
    html = login(adam).get(reverse("ota_campaign_add")).content.decode()
    assert "No release to roll out" in html


def test_operator_and_viewer_cannot_create(login, olivia, victor, platform_release):
    for member in (olivia, victor):
        client = login(member)
        assert client.get(reverse("ota_campaign_add")).status_code == 403
        response = client.post(
            reverse("ota_campaign_add"), _form(platform_release, step="create")
        )
        assert response.status_code == 403
    assert not Campaign.objects.exists()


def test_progress_page_counts_rows_and_buttons(login, adam, victor, running_a, fleet):
    old, current = fleet
    report(running_a, old, "downloading", percent=40, corrupted=3)
    html = (
        login(victor)
        .get(reverse("ota_campaign_detail", args=[running_a.code]))
        .content.decode()
    )
    assert f'data-campaign="{running_a.code.hex}"' in html
    assert f'<tr data-device="{old.code.hex}">' in html
    assert 'value="40"' in html  # the progress bar
    assert '<td data-label="Corrupted chunks" data-field="corrupted_chunks">3</td>' in (
        html
    )
    assert 'data-count="downloading"' in html and 'data-count="skipped"' in html
    assert "10 devices/min" in html
    assert 'data-action="pause"' not in html  # a viewer: no buttons
    admin = login(adam).get(reverse("ota_campaign_detail", args=[running_a.code]))
    assert b'data-action="pause"' in admin.content
    assert b'data-action="cancel"' in admin.content
    assert b'data-action="resume"' not in admin.content


def test_campaign_list_shows_progress(login, victor, running_a):
    html = login(victor).get(reverse("ota_campaigns")).content.decode()
    assert reverse("ota_campaign_detail", args=[running_a.code]) in html
    assert "0 of 2 updated" in html


def test_campaign_list_queries_do_not_grow(
    login, adam, platform_release, fleet, django_assert_max_num_queries
):
    for _ in range(6):
        make_campaign(adam, platform_release)
    client = login(adam)
    client.get(reverse("ota_campaigns"))
    with django_assert_max_num_queries(12):
        page = client.get(reverse("ota_campaigns"))
    assert page.content.decode().count("0 of 0 updated") == 6


def test_the_device_table_is_paginated(login, adam, platform_release, platform_broker):
    from ota.services import campaign_set_state, campaign_step
    from ota.views.campaigns import PAGE_SIZE

    for i in range(PAGE_SIZE + 3):
        Device.objects.create(
            tenant=adam.tenant,
            broker=platform_broker,
            device_id=f"ESP-{i:06X}",
            firmware_version="1.0.0",
        )
    campaign = make_campaign(adam, platform_release)
    campaign_set_state(campaign, "start", actor=adam.user)
    campaign_step(campaign.pk)
    client = login(adam)
    url = reverse("ota_campaign_detail", args=[campaign.code])
    first = client.get(url).content.decode()
    assert first.count("<tr data-device=") == PAGE_SIZE
    assert "Page 1 of 2" in first
    second = client.get(url + "?page=2").content.decode()
    assert second.count("<tr data-device=") == 3


def test_progress_page_queries_do_not_grow_with_devices(
    login, adam, platform_release, platform_broker, django_assert_max_num_queries
):
    from ota.services import campaign_set_state, campaign_step

    for i in range(30):
        Device.objects.create(
            tenant=adam.tenant,
            broker=platform_broker,
            device_id=f"ESP-{i:06X}",
            firmware_version="1.0.0",
        )
    campaign = make_campaign(adam, platform_release)
    campaign_set_state(campaign, "start", actor=adam.user)
    campaign_step(campaign.pk)
    client = login(adam)
    url = reverse("ota_campaign_detail", args=[campaign.code])
    client.get(url)
    with django_assert_max_num_queries(20):
        client.get(url)


def test_live_json_carries_counts_and_rows(login, victor, running_a, fleet):
    old, _ = fleet
    report(running_a, old, "downloading", percent=60, corrupted=2)
    body = login(victor).get(reverse("ota_campaign_live", args=[running_a.code])).json()
    assert body["campaign"] == running_a.code.hex
    assert body["state"] == "running"
    assert body["counts"]["downloading"] == 1 and body["counts"]["total"] == 2
    row = next(u for u in body["updates"] if u["device"] == old.code.hex)
    assert (row["state"], row["percent"]) == ("downloading", 60)
    assert row["corrupted_chunks"] == 2


@pytest.mark.parametrize(
    "action, state",
    [("pause", "paused"), ("cancel", "cancelled")],
)
def test_admin_steers_a_campaign_audited(login, adam, running_a, action, state):
    response = login(adam).post(
        reverse("ota_campaign_state", args=[running_a.code]), {"action": action}
    )
    assert response.status_code == 302
    running_a.refresh_from_db()
    assert running_a.state == state
    assert AuditEvent.objects.filter(action=f"ota.campaign_{action}").exists()


def test_pause_then_resume(login, adam, running_a):
    client = login(adam)
    url = reverse("ota_campaign_state", args=[running_a.code])
    client.post(url, {"action": "pause"})
    page = client.get(reverse("ota_campaign_detail", args=[running_a.code]))
    assert b'data-action="resume"' in page.content
    client.post(url, {"action": "resume"})
    running_a.refresh_from_db()
    assert running_a.state == "running"


def test_a_wrong_transition_says_why_and_changes_nothing(login, adam, campaign_a):
    client = login(adam)
    response = client.post(
        reverse("ota_campaign_state", args=[campaign_a.code]),
        {"action": "resume"},
        follow=True,
    )
    assert b"Cannot resume a draft campaign" in response.content
    response = client.post(
        reverse("ota_campaign_state", args=[campaign_a.code]),
        {"action": "explode"},
        follow=True,
    )
    assert b"Choose start, pause, resume or cancel." in response.content
    campaign_a.refresh_from_db()
    assert campaign_a.state == "draft"


def test_operator_cannot_steer(login, olivia, running_a):
    response = login(olivia).post(
        reverse("ota_campaign_state", args=[running_a.code]), {"action": "cancel"}
    )
    assert response.status_code == 403
    running_a.refresh_from_db()
    assert running_a.state == "running"


@pytest.mark.parametrize("name", ["ota_campaign_detail", "ota_campaign_live"])
def test_foreign_campaign_answers_like_a_made_up_one(login, adam, campaign_b, name):
    client = login(adam)
    answers = [
        client.get(reverse(name, args=[code]))
        for code in (campaign_b.code, uuid.uuid4(), "not-a-code")
    ]
    assert answers[0].status_code == 404
    assert answers[0].content == answers[1].content == answers[2].content


def test_foreign_campaign_cannot_be_steered(login, adam, campaign_b):
    client = login(adam)
    answers = [
        client.post(reverse("ota_campaign_state", args=[code]), {"action": "cancel"})
        for code in (campaign_b.code, uuid.uuid4(), "not-a-code")
    ]
    assert answers[0].status_code == 404
    assert answers[0].content == answers[1].content == answers[2].content
    campaign_b.refresh_from_db()
    assert campaign_b.state == "draft"


# --- a device's history and consent ---------------------------------------------


def test_device_history_on_its_page_and_its_pool_page(
    login, victor, running_a, fleet, pool_a
):
    old, _ = fleet
    report(running_a, old, "failed", reason="corrupted chunks: 8, last 1", corrupted=8)
    client = login(victor)
    page = client.get(reverse("ota_device", args=[old.code])).content.decode()
    assert "1.4.0" in page and "corrupted chunks: 8" in page and "Failed" in page
    assert '<td data-label="Corrupted chunks">8</td>' in page
    pool_page = client.get(reverse("pool_detail", args=[pool_a.code])).content.decode()
    assert 'id="ota-history"' in pool_page and "corrupted chunks: 8" in pool_page


def test_device_history_empty_and_foreign(login, victor, device_a, device_b):
    client = login(victor)
    page = client.get(reverse("ota_device", args=[device_a.code]))
    assert b"No over-the-air update yet" in page.content
    answers = [
        client.get(reverse("ota_device", args=[code]))
        for code in (device_b.code, uuid.uuid4(), "not-a-code")
    ]
    assert answers[0].status_code == 404
    assert answers[0].content == answers[1].content == answers[2].content


@pytest.mark.parametrize(
    "answer, state", [("accept", "queued"), ("decline", "skipped")]
)
def test_operator_answers_consent_on_the_pool_page(
    login, olivia, consent_a, pool_a, answer, state
):
    client = login(olivia)
    page = client.get(reverse("pool_detail", args=[pool_a.code])).content.decode()
    assert 'id="ota-consent"' in page and 'data-consent="accept"' in page
    url = reverse("ota_consent", args=[pool_a.code, consent_a.campaign.code])
    response = client.post(url, {"answer": answer}, follow=True)
    assert response.status_code == 200
    consent_a.refresh_from_db()
    assert consent_a.state in (state, "offered")
    assert AuditEvent.objects.filter(action=f"ota.consent_{answer}").exists()
    page = client.get(reverse("pool_detail", args=[pool_a.code])).content.decode()
    assert 'id="ota-consent"' not in page
    # Answered: a second answer finds nothing waiting.
    assert client.post(url, {"answer": answer}).status_code == 404


def test_viewer_cannot_answer_consent(login, victor, consent_a, pool_a):
    client = login(victor)
    page = client.get(reverse("pool_detail", args=[pool_a.code])).content.decode()
    assert 'id="ota-consent"' in page and 'data-consent="accept"' not in page
    url = reverse("ota_consent", args=[pool_a.code, consent_a.campaign.code])
    assert client.post(url, {"answer": "accept"}).status_code == 403
    consent_a.refresh_from_db()
    assert consent_a.state == "awaiting_consent"


def test_consent_bad_answer_and_foreign(login, olivia, carol, consent_a, pool_a):
    client = login(olivia)
    url = reverse("ota_consent", args=[pool_a.code, consent_a.campaign.code])
    response = client.post(url, {"answer": "maybe"}, follow=True)
    assert b"Choose to accept or decline" in response.content
    other = login(carol)
    answers = [
        other.post(reverse("ota_consent", args=[pool, campaign]), {"answer": "accept"})
        for pool, campaign in (
            (pool_a.code, consent_a.campaign.code),
            (uuid.uuid4(), uuid.uuid4()),
            ("not-a-code", "x"),
        )
    ]
    assert answers[0].status_code == 404
    assert answers[0].content == answers[1].content == answers[2].content
    consent_a.refresh_from_db()
    assert consent_a.state == "awaiting_consent"


def test_nav_links_to_updates(login, victor):
    page = login(victor).get(reverse("pools")).content.decode()
    assert f'href="{reverse("ota_campaigns")}"' in page
