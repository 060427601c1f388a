"""seed_demo: the demo logins of the README, idempotent, and never in production."""

import io

import pytest
from django.core.management import CommandError, call_command

from devices.models import Broker, Device, Pool
from tenants.models import Membership, Tenant, User


def counts() -> dict[str, int]:
    return {
        model.__name__: model.objects.count()
        for model in (Tenant, User, Membership, Pool, Device, Broker)
    }


@pytest.fixture(autouse=True)
def _debug_on(settings):
    # pytest-django runs tests with DEBUG off; seed_demo is a development tool.
    settings.DEBUG = True


def seed() -> str:
    out = io.StringIO()
    call_command("seed_demo", stdout=out)
    return out.getvalue()


def test_seed_demo_is_idempotent_and_matches_the_readme(db, monkeypatch):
    monkeypatch.delenv("DEMO_PASSWORD", raising=False)
    out = seed()
    first = counts()
    assert first == {
        "Tenant": 2,
        "User": 5,  # four demo logins and one staff account
        "Membership": 4,
        "Pool": 4,
        "Device": 4,
        "Broker": 1,
    }
    assert "alice@acme.test" in out and "poolsaas-demo" in out
    seed()
    assert counts() == first

    acme = Tenant.objects.get(name="Acme Pools")
    globex = Tenant.objects.get(name="Globex Residence")
    roles = dict(
        Membership.objects.filter(tenant=acme).values_list("user__email", "role")
    )
    assert roles == {
        "alice@acme.test": "owner",
        "olivia@acme.test": "operator",
        "victor@acme.test": "viewer",
    }
    assert Membership.objects.get(tenant=globex).user.email == "carol@globex.test"
    assert Pool.objects.filter(tenant=acme).count() == 3
    assert Pool.objects.filter(tenant=globex).count() == 1
    # Every device sits in its own tenant's pool.
    for device in Device.objects.select_related("pool"):
        assert device.pool.tenant_id == device.tenant_id
    assert User.objects.get(email="alice@acme.test").check_password("poolsaas-demo")


def test_seed_demo_uses_demo_password(db, monkeypatch):
    monkeypatch.setenv("DEMO_PASSWORD", "another-demo-pw")
    seed()
    assert User.objects.get(email="carol@globex.test").check_password("another-demo-pw")


def test_seed_demo_refuses_with_debug_off(db, settings):
    settings.DEBUG = False
    with pytest.raises(CommandError, match="only runs with DEBUG on"):
        call_command("seed_demo", stdout=io.StringIO())
    assert counts()["Tenant"] == 0
    assert counts()["User"] == 0
