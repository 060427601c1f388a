import uuid

import pytest

from billing import metering

# The bridge's fixtures, reused: an in-process bridge and a private topic prefix.
from devices.tests.test_bridge import make_bridge, prefix  # noqa: F401


@pytest.fixture
def redis_clean():
    """This worktree's Redis DB without usage buckets or the over-quota snapshot,
    before and after."""
    r = metering.client()
    if r is None:
        pytest.skip("needs REDIS_URL")

    def clean():
        for key in r.scan_iter(match=f"{metering.PREFIX}*"):
            r.delete(key)
        r.delete(metering.OVER_QUOTA_KEY)

    clean()
    yield r
    metering.batcher.flush()
    clean()


@pytest.fixture
def make_plan(db):
    """A plan with the given limits (the rest generous), its upgrade a Business-like
    plan. Fresh rows: transactional tests flush the migration's plans."""
    from billing.models import Plan

    def make(**limits):
        tag = uuid.uuid4().hex[:6]
        bigger = Plan.objects.create(
            code=f"big-{tag}",
            name="Business",
            max_pools=200,
            max_devices=200,
            max_members=50,
            messages_per_month=10**9,
            history_days=730,
            api_requests_per_minute=3000,
            ota_campaigns_per_month=100,
        )
        fields = dict(
            code=f"small-{tag}",
            name="Free",
            max_pools=100,
            max_devices=100,
            max_members=100,
            messages_per_month=10**8,
            history_days=365,
            api_requests_per_minute=1000,
            ota_campaigns_per_month=100,
            upgrade_to=bigger,
        )
        fields.update(limits)
        return Plan.objects.create(**fields)

    return make
