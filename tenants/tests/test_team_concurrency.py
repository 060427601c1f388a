"""The last-owner rule under concurrency: two owners acting on each other at the
same moment must leave exactly one owner, and each request gets a clear answer
(done, or the last-owner error), never a database deadlock."""

import threading

import pytest
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import connection

from tenants.models import Membership
from tenants.services import membership_remove, membership_role_change

pytestmark = [pytest.mark.postgres_only, pytest.mark.django_db(transaction=True)]

ROUNDS = 8


def _race(*calls) -> list[str]:
    barrier = threading.Barrier(len(calls))
    outcomes: list[str] = []

    def run(call):
        try:
            barrier.wait(timeout=5)
            call()
            outcomes.append("done")
        except ValidationError:
            outcomes.append("refused")
        except PermissionDenied:
            outcomes.append("forbidden")
        except Exception as error:  # noqa: BLE001 - the test reports any other outcome
            outcomes.append(f"{type(error).__name__}: {error}")
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(call,)) for call in calls]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=15)
    return sorted(outcomes)


def _two_owners(tenant_a, make_member, n):
    one = make_member(tenant_a, f"one{n}@acme.test", "owner")
    two = make_member(tenant_a, f"two{n}@acme.test", "owner")
    return one, two


def _reset(tenant_a):
    Membership.objects.filter(tenant=tenant_a).delete()


def test_two_owners_demoting_each_other_leave_one_owner(tenant_a, make_member):
    for n in range(ROUNDS):
        one, two = _two_owners(tenant_a, make_member, n)
        outcomes = _race(
            lambda one=one, two=two: membership_role_change(
                membership=one, target=two, role="admin"
            ),
            lambda one=one, two=two: membership_role_change(
                membership=two, target=one, role="admin"
            ),
        )
        owners = Membership.objects.filter(tenant=tenant_a, role="owner").count()
        assert owners == 1, (n, outcomes)
        # The loser either lost its owner role first (forbidden) or hit the rule.
        assert outcomes[0] == "done" and outcomes[1] in ("forbidden", "refused"), (
            n,
            outcomes,
        )
        _reset(tenant_a)


def test_two_owners_removing_each_other_leave_one_owner(tenant_a, make_member):
    for n in range(ROUNDS):
        one, two = _two_owners(tenant_a, make_member, n)
        outcomes = _race(
            lambda one=one, two=two: membership_remove(membership=one, target=two),
            lambda one=one, two=two: membership_remove(membership=two, target=one),
        )
        owners = Membership.objects.filter(tenant=tenant_a, role="owner").count()
        assert owners == 1, (n, outcomes)
        assert outcomes[0] == "done" and outcomes[1] in ("forbidden", "refused"), (
            n,
            outcomes,
        )
        _reset(tenant_a)


def test_owner_leaving_while_demoted_keeps_an_owner(tenant_a, make_member):
    for n in range(ROUNDS):
        one, two = _two_owners(tenant_a, make_member, n)
        outcomes = _race(
            lambda one=one: membership_remove(membership=one, target=one),
            lambda one=one, two=two: membership_role_change(
                membership=one, target=two, role="viewer"
            ),
        )
        assert Membership.objects.filter(tenant=tenant_a, role="owner").count() == 1
        assert "done" in outcomes, (n, outcomes)
        assert not {o for o in outcomes} - {"done", "refused", "forbidden"}, (
            n,
            outcomes,
        )
        _reset(tenant_a)
