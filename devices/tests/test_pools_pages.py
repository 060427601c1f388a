"""The pools list with its "Add pool" form, and a pool's settings page."""

import uuid

import pytest
from django.urls import reverse

from audit.models import AuditEvent
from devices.models import Pool


def pool_data(**overrides):
    data = {
        "name": "Rooftop pool",
        "timezone_name": "Europe/Lisbon",
        "mode1_name": "Waterfall",
        "mode2_name": "Jets",
    }
    data.update(overrides)
    return data


def snapshot(pool):
    fresh = Pool.objects.get(pk=pool.pk)
    return (
        fresh.name,
        fresh.timezone,
        fresh.mode1_name,
        fresh.mode2_name,
        fresh.config_version,
    )


# --- list and add ----------------------------------------------------------------


def test_list_keeps_working_and_offers_add_to_admins(login, adam, pool_a, pool_b):
    response = login(adam).get(reverse("pools"))
    assert response.status_code == 200
    html = response.content.decode()
    assert "Acme Main Pool" in html
    assert "Globex Pool" not in html
    assert f'action="{reverse("pool_add")}"' in html
    assert 'name="timezone_name"' in html
    assert reverse("pool_settings", args=[pool_a.code]) in html
    assert reverse("pool_detail", args=[pool_a.code]) in html


@pytest.mark.parametrize("persona", ["olivia", "victor"])
def test_list_has_no_add_form_below_admin(request, login, persona, pool_a):
    response = login(request.getfixturevalue(persona)).get(reverse("pools"))
    assert response.status_code == 200
    html = response.content.decode()
    assert "Acme Main Pool" in html
    assert reverse("pool_add") not in html
    assert reverse("pool_settings", args=[pool_a.code]) not in html
    assert "Ask an admin" not in html  # the list is not empty


def test_empty_list_says_how_to_add(login, adam, victor):
    assert (
        "Use <strong>Add pool</strong>"
        in login(adam).get(reverse("pools")).content.decode()
    )
    html = login(victor).get(reverse("pools")).content.decode()
    assert "Ask an admin of Acme Pools" in html


def test_admin_adds_a_pool(login, adam, tenant_b):
    response = login(adam).post(
        reverse("pool_add"), {**pool_data(), "tenant": tenant_b.code}, follow=True
    )
    assert response.status_code == 200
    assert "Pool Rooftop pool added." in response.content.decode()
    pool = Pool.objects.get(name="Rooftop pool")
    assert pool.tenant_id == adam.tenant_id
    assert (pool.timezone, pool.mode1_name, pool.mode2_name) == (
        "Europe/Lisbon",
        "Waterfall",
        "Jets",
    )
    event = AuditEvent.objects.get(action="pool.created")
    assert event.target_code == str(pool.code)
    assert event.actor_id == adam.user_id


@pytest.mark.parametrize("persona", ["olivia", "victor"])
def test_add_needs_admin(request, login, persona):
    response = login(request.getfixturevalue(persona)).post(
        reverse("pool_add"), pool_data()
    )
    assert response.status_code == 403
    assert not Pool.objects.exists()


def test_add_is_post_only(login, adam):
    assert login(adam).get(reverse("pool_add")).status_code == 405


@pytest.mark.parametrize(
    ("overrides", "field", "message"),
    [
        ({"timezone_name": "Mars/Olympus_Mons"}, "timezone_name", "Unknown time zone"),
        ({"name": "   "}, "name", "required"),
        ({"name": "x" * 121}, "name", "at most 120"),
        ({"mode2_name": "waterfall"}, "mode2_name", "different names"),
        ({"mode1_name": ""}, "mode1_name", "required"),
    ],
)
def test_add_bad_input(login, adam, pool_a, overrides, field, message):
    response = login(adam).post(reverse("pool_add"), pool_data(**overrides))
    assert response.status_code == 400
    errors = response.context["add_form"].errors
    assert message in " ".join(errors[field]), errors
    html = response.content.decode()
    assert message in html
    assert "Acme Main Pool" in html  # the list is still there
    assert Pool.objects.filter(tenant=adam.tenant).count() == 1


# --- settings --------------------------------------------------------------------


def test_settings_page_prefilled(login, alice, pool_a):
    response = login(alice).get(reverse("pool_settings", args=[pool_a.code]))
    assert response.status_code == 200
    form = response.context["form"]
    assert form.initial["name"] == "Acme Main Pool"
    assert form.initial["timezone_name"] == "Europe/Madrid"
    assert '<option value="Europe/Madrid" selected>' in response.content.decode()


def test_settings_rename_and_move_time_zone(login, adam, pool_a):
    version = pool_a.config_version
    response = login(adam).post(
        reverse("pool_settings", args=[pool_a.code]),
        pool_data(name="Main pool", timezone_name="Atlantic/Canary"),
    )
    assert response.status_code == 302
    pool = Pool.objects.get(pk=pool_a.pk)
    assert (pool.name, pool.timezone, pool.mode1_name) == (
        "Main pool",
        "Atlantic/Canary",
        "Waterfall",
    )
    # A new time zone moves when programs run: the device must re-apply config.
    assert pool.config_version == version + 1
    event = AuditEvent.objects.get(action="pool.updated")
    assert event.data["changes"]["timezone"] == {
        "from": "Europe/Madrid",
        "to": "Atlantic/Canary",
    }


def test_settings_rename_only_keeps_config_version(login, adam, pool_a):
    login(adam).post(
        reverse("pool_settings", args=[pool_a.code]),
        pool_data(
            name="Renamed",
            timezone_name="Europe/Madrid",
            mode1_name="Cascada",
            mode2_name="Eyectores",
        ),
    )
    pool = Pool.objects.get(pk=pool_a.pk)
    assert pool.name == "Renamed"
    assert pool.config_version == pool_a.config_version


def test_settings_unchanged_writes_no_event(login, adam, pool_a):
    login(adam).post(
        reverse("pool_settings", args=[pool_a.code]),
        pool_data(
            name=pool_a.name,
            timezone_name="Europe/Madrid",
            mode1_name="Cascada",
            mode2_name="Eyectores",
        ),
    )
    assert not AuditEvent.objects.filter(action="pool.updated").exists()


@pytest.mark.parametrize("persona", ["olivia", "victor"])
def test_settings_need_admin(request, login, persona, pool_a):
    before = snapshot(pool_a)
    client = login(request.getfixturevalue(persona))
    url = reverse("pool_settings", args=[pool_a.code])
    assert client.get(url).status_code == 403
    assert client.post(url, pool_data(name="Hijacked")).status_code == 403
    assert snapshot(pool_a) == before


@pytest.mark.parametrize("code", ["foreign", uuid.uuid4(), "not-a-code"])
def test_settings_foreign_and_made_up_are_404(login, alice, pool_b, code):
    code = pool_b.code if code == "foreign" else code
    before = snapshot(pool_b)
    client = login(alice)
    url = reverse("pool_settings", args=[code])
    assert client.get(url).status_code == 404
    assert client.post(url, pool_data(name="Hijacked")).status_code == 404
    assert snapshot(pool_b) == before


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"timezone_name": "Europe/Atlantis"}, "timezone_name"),
        ({"name": ""}, "name"),
        ({"mode1_name": "Jets", "mode2_name": "JETS"}, "mode2_name"),
    ],
)
def test_settings_bad_input_changes_nothing(login, adam, pool_a, overrides, field):
    before = snapshot(pool_a)
    response = login(adam).post(
        reverse("pool_settings", args=[pool_a.code]), pool_data(**overrides)
    )
    assert response.status_code == 400
    assert field in response.context["form"].errors
    assert snapshot(pool_a) == before
    assert not AuditEvent.objects.filter(action="pool.updated").exists()


def test_pool_update_service_refuses_foreign_pool(alice, pool_b):
    from django.http import Http404

    from devices.services.pools import pool_update

    # Http404, which every entry point answers as "not found" (DoesNotExist was 500).
    with pytest.raises(Http404):
        pool_update(membership=alice, pool=pool_b, name="Hijacked")
    assert Pool.objects.get(pk=pool_b.pk).name == "Globex Pool"
