"""Shared test set-up: the environment defaults and the personas of both tenants.

Personas (reused by every app's tests):
  tenant A "Acme Pools": alice (owner), adam (admin), olivia (operator),
                         victor (viewer)
  tenant B "Globex Residence": carol (owner)
"""

import os

import pytest

PASSWORD = "correct-horse-battery"


@pytest.fixture(autouse=True)
def _fast_tests(settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    settings.STORAGES = {
        **settings.STORAGES,
        "staticfiles": {
            "BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"
        },
    }


@pytest.fixture
def make_user(db):
    from tenants.models import User

    def make(email: str, **fields):
        return User.objects.create_user(email=email, password=PASSWORD, **fields)

    return make


@pytest.fixture
def make_member(db, make_user):
    from tenants.models import Membership, User

    def make(tenant, email: str, role: str):
        user = User.objects.filter(email=email).first() or make_user(email)
        return Membership.objects.create(tenant=tenant, user=user, role=role)

    return make


@pytest.fixture
def tenant_a(db):
    from tenants.models import Tenant

    return Tenant.objects.create(name="Acme Pools", slug="acme")


@pytest.fixture
def tenant_b(db):
    from tenants.models import Tenant

    return Tenant.objects.create(name="Globex Residence", slug="globex")


@pytest.fixture
def alice(tenant_a, make_member):
    return make_member(tenant_a, "alice@acme.test", "owner")


@pytest.fixture
def adam(tenant_a, make_member):
    return make_member(tenant_a, "adam@acme.test", "admin")


@pytest.fixture
def olivia(tenant_a, make_member):
    return make_member(tenant_a, "olivia@acme.test", "operator")


@pytest.fixture
def victor(tenant_a, make_member):
    return make_member(tenant_a, "victor@acme.test", "viewer")


@pytest.fixture
def carol(tenant_b, make_member):
    return make_member(tenant_b, "carol@globex.test", "owner")


@pytest.fixture
def platform_broker(db):
    from devices.services.brokers import broker_ensure_platform

    return broker_ensure_platform()


@pytest.fixture
def pool_a(tenant_a):
    from devices.models import Pool

    return Pool.objects.create(tenant=tenant_a, name="Acme Main Pool")


@pytest.fixture
def pool_b(tenant_b):
    from devices.models import Pool

    return Pool.objects.create(tenant=tenant_b, name="Globex Pool")


@pytest.fixture
def device_a(pool_a, platform_broker):
    from devices.models import Device

    return Device.objects.create(
        tenant=pool_a.tenant,
        pool=pool_a,
        broker=platform_broker,
        device_id="ESP-A1A1A1",
    )


@pytest.fixture
def device_b(pool_b, platform_broker):
    from devices.models import Device

    return Device.objects.create(
        tenant=pool_b.tenant,
        pool=pool_b,
        broker=platform_broker,
        device_id="ESP-B2B2B2",
    )


@pytest.fixture
def login(client):
    """Log a membership's user in and select that membership's tenant."""
    from tenants.auth import SESSION_KEY

    def do(membership):
        client.force_login(membership.user)
        session = client.session
        session[SESSION_KEY] = membership.tenant.code.hex
        session.save()
        return client

    return do


_DB_FIXTURES = {"db", "transactional_db", "django_db_setup", "live_server"}


def pytest_collection_modifyitems(config, items):
    """POOLSAAS_DB_TESTS_ONLY=1 (the SQLite pass of `make test`) keeps database tests
    only, and drops those that need PostgreSQL or Redis."""
    if os.environ.get("POOLSAAS_DB_TESTS_ONLY") != "1":
        return
    from django.conf import settings

    engine = settings.DATABASES["default"]["ENGINE"]
    if engine != "django.db.backends.sqlite3":
        # This pass exists to prove the embedded default works; on another
        # database it would pass while proving nothing.
        raise pytest.UsageError(
            f"POOLSAAS_DB_TESTS_ONLY=1 runs on SQLite, but the database is {engine}: "
            "unset DATABASE_URL."
        )
    keep, drop = [], []
    for item in items:
        uses_db = item.get_closest_marker("django_db") or _DB_FIXTURES & set(
            item.fixturenames
        )
        excluded = item.get_closest_marker("postgres_only") or item.get_closest_marker(
            "redis"
        )
        (keep if uses_db and not excluded else drop).append(item)
    if items and not keep:
        # pytest would exit 5 ("no tests ran"); say why instead.
        raise pytest.UsageError(
            "POOLSAAS_DB_TESTS_ONLY=1 selected no database test from these paths."
        )
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep
