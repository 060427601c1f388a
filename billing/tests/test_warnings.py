"""80 % and 100 % of a plan limit: one e-mail to the owners per period and limit,
however often the check runs, and a banner on the dashboard."""

import datetime as dt

import pytest
from django.core import mail
from django.urls import reverse

from billing import metering
from billing.models import UsageCounter, UsageWarning
from billing.services import usage_warnings_send
from devices.models import Pool

pytestmark = pytest.mark.django_db


@pytest.fixture
def check(django_capture_on_commit_callbacks):
    """usage_warnings_send, with its after-commit e-mails sent as it commits."""

    def run(**kwargs):
        with django_capture_on_commit_callbacks(execute=True):
            return usage_warnings_send(**kwargs)

    return run


NOW = dt.datetime(2026, 11, 15, 12, 0, tzinfo=dt.UTC)


def messages_used(tenant, n, at=NOW):
    UsageCounter.objects.create(
        tenant=tenant, kind=metering.MESSAGES_IN, minute=at, value=n
    )


def test_80_percent_mails_the_owners_once_per_period(
    alice, adam, carol, tenant_a, tenant_b, make_plan, check
):
    tenant_a.plan = make_plan(messages_per_month=1000)
    tenant_a.save()
    messages_used(tenant_a, 790)
    assert check(now=NOW) == 0
    messages_used(tenant_a, 10, at=NOW + dt.timedelta(minutes=1))  # 800: 80 %
    assert check(now=NOW) == 1
    assert check(now=NOW) == 0
    assert len(mail.outbox) == 1
    sent = mail.outbox[0]
    assert sent.to == ["alice@acme.test"]  # owners only, not the admin
    assert "80 % of your device messages per month" in sent.subject
    assert "800 of 1000" in sent.body
    assert "Upgrade to Business" in sent.body

    # 100 % is said once too; other tenants hear nothing.
    messages_used(tenant_a, 200, at=NOW + dt.timedelta(minutes=2))
    assert check(now=NOW) == 1
    assert check(now=NOW) == 0
    assert len(mail.outbox) == 2
    assert "limit reached" in mail.outbox[1].subject
    assert "dropped until the next billing period" in mail.outbox[1].body
    assert not UsageWarning.objects.filter(tenant=tenant_b).exists()

    # Next month starts afresh: nothing used, nothing sent.
    assert check(now=NOW + dt.timedelta(days=30)) == 0


def test_a_next_period_warns_again(alice, tenant_a, make_plan, check):
    tenant_a.plan = make_plan(messages_per_month=100)
    tenant_a.save()
    messages_used(tenant_a, 85)
    check(now=NOW)
    december = NOW + dt.timedelta(days=20)
    messages_used(tenant_a, 90, at=december)
    check(now=december)
    check(now=december)
    assert len(mail.outbox) == 2
    assert UsageWarning.objects.filter(tenant=tenant_a, level=80).count() == 2


def test_the_dashboard_shows_the_banner(client, login, alice, victor, make_plan, check):
    tenant = alice.tenant
    tenant.plan = make_plan(max_pools=5)
    tenant.save()
    login(victor)
    html = client.get(reverse("pools")).content.decode()
    assert 'id="usage-banner"' not in html
    for i in range(4):
        Pool.objects.create(tenant=tenant, name=f"P{i}")
    check()
    html = client.get(reverse("pools")).content.decode()
    assert 'id="usage-banner"' in html
    assert "You have used 80 % of your plan&#x27;s pools (4 of 5)." in html
    assert "Upgrade to Business (200 pools)" in html


def test_a_fixed_limit_warns_once_when_reached_not_every_month(
    alice, tenant_a, make_plan, check
):
    """The Free plan's one pool is 100 % of its pools: said once, not monthly."""
    tenant_a.plan = make_plan(max_pools=1, max_members=100)
    tenant_a.save()
    Pool.objects.create(tenant=tenant_a, name="The one")
    assert check(now=NOW) == 1
    assert "pools limit reached" in mail.outbox[0].subject
    assert "New pools are refused." in mail.outbox[0].body
    for months in (0, 1, 2, 13):
        assert check(now=NOW + dt.timedelta(days=31 * months)) == 0
    assert len(mail.outbox) == 1
    # The banner still says so, in a later month too.
    from billing.selectors import usage_banner

    later = NOW + dt.timedelta(days=62)
    assert usage_banner(tenant=tenant_a, now=later) == [
        "You have reached your plan's pools (1). Upgrade to Business (200 pools) on "
        "the Billing page, or ask us for more."
    ]


def test_a_fixed_limit_reached_again_after_falling_below_warns_again(
    alice, tenant_a, make_plan, check
):
    tenant_a.plan = make_plan(max_pools=5, max_members=100)
    tenant_a.save()
    pools = [Pool.objects.create(tenant=tenant_a, name=f"P{i}") for i in range(5)]
    assert check(now=NOW) == 1  # 100 %
    # Down to 80 %: nothing to say (coming down is not news)...
    pools.pop().delete()
    assert check(now=NOW) == 0
    # ...down to 60 %, then up to 80 % and 100 % again: each said once more.
    pools.pop().delete()
    assert check(now=NOW) == 0
    assert not UsageWarning.objects.filter(tenant=tenant_a, limit="pools").exists()
    Pool.objects.create(tenant=tenant_a, name="again 4")
    assert check(now=NOW) == 1
    Pool.objects.create(tenant=tenant_a, name="again 5")
    assert check(now=NOW) == 1
    assert check(now=NOW + dt.timedelta(days=40)) == 0
    subjects = [m.subject for m in mail.outbox]
    assert len(subjects) == 3
    assert "80 % of your pools used" in subjects[1]
    assert "pools limit reached" in subjects[2]


def test_a_monthly_limit_still_warns_every_period(alice, tenant_a, make_plan, check):
    tenant_a.plan = make_plan(messages_per_month=100)
    tenant_a.save()
    messages_used(tenant_a, 100)
    december = NOW + dt.timedelta(days=20)
    messages_used(tenant_a, 100, at=december)
    assert check(now=NOW) == 1
    assert check(now=december) == 1
    assert check(now=december) == 0


def test_the_migration_keeps_one_claim_per_fixed_limit_so_nobody_is_mailed_again(
    alice, tenant_a, make_plan, check
):
    import importlib

    from django.apps import apps

    migration = importlib.import_module(
        "billing.migrations.0008_fixed_limit_warnings_once"
    )
    tenant_a.plan = make_plan(max_pools=1, messages_per_month=100)
    tenant_a.save()
    Pool.objects.create(tenant=tenant_a, name="The one")
    messages_used(tenant_a, 100)
    # Claims made before the change: one a month for the pool, and this month's
    # message warning (monthly: left as it is).
    for month in (10, 11):
        start = dt.datetime(2026, month, 1, tzinfo=dt.UTC)
        for limit in ("pools", "messages"):
            UsageWarning.objects.create(
                tenant=tenant_a,
                period_start=start,
                limit=limit,
                level=100,
                used=1,
                allowed=1,
            )
    migration.forwards(apps, None)
    rows = sorted(
        UsageWarning.objects.filter(tenant=tenant_a).values_list(
            "limit", "period_start"
        )
    )
    assert rows == [
        ("messages", dt.datetime(2026, 10, 1, tzinfo=dt.UTC)),
        ("messages", dt.datetime(2026, 11, 1, tzinfo=dt.UTC)),
        ("pools", migration.FIXED_PERIOD),
    ]
    assert check(now=NOW) == 0
    assert mail.outbox == []
