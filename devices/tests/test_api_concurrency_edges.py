"""Two writers at once through the API, on PostgreSQL: the If-Match comparison happens
under the row lock, so two writers holding the same ETag never both succeed; and a
pool that disappears while a writer waits for it answers 404 like any unknown pool,
never 500.

A third connection holds the row lock until both writers are waiting for it, so
the interleaving is forced rather than hoped for.
"""

import threading
import time
import uuid

import pytest
from django.db import connection, connections, transaction

from devices.models import Broker, Pool
from devices.services.brokers import broker_create
from devices.services.pools import pool_update
from poolsaas.api.testing import api_client

pytestmark = [
    pytest.mark.postgres_only,
    pytest.mark.django_db(transaction=True),
]


@pytest.fixture(autouse=True)
def _postgres_only():
    if connection.vendor != "postgresql":
        pytest.skip("needs PostgreSQL row locks")


def _lock_waiters() -> int:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
            " AND wait_event_type = 'Lock' AND state = 'active'"
        )
        return cursor.fetchone()[0]


def _wait_until(predicate, timeout=15.0, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


class RowHolder(threading.Thread):
    """Holds FOR UPDATE on one row in its own transaction until released; `then`
    runs inside that transaction just before it commits."""

    def __init__(self, queryset, then=None):
        super().__init__(daemon=True)
        self.queryset, self.then = queryset, then
        self.locked, self.release = threading.Event(), threading.Event()
        self.error: BaseException | None = None

    def run(self):
        try:
            with transaction.atomic():
                row = self.queryset.select_for_update().get()
                self.locked.set()
                assert self.release.wait(30)
                if self.then:
                    self.then(row)
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            self.error = exc
        finally:
            connections.close_all()


def _run_writers(holder, requests, waiters):
    """Start the writers while the holder has the lock, let them all queue up behind
    it, release it, and return their responses."""
    responses: list = [None] * len(requests)
    errors: list[BaseException] = []

    def write(i, request):
        try:
            responses[i] = request()
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            errors.append(exc)
        finally:
            connections.close_all()

    holder.start()
    assert holder.locked.wait(10)
    threads = [
        threading.Thread(target=write, args=(i, r), daemon=True)
        for i, r in enumerate(requests)
    ]
    for thread in threads:
        thread.start()
    _wait_until(lambda: _lock_waiters() >= waiters, what="writers waiting")
    holder.release.set()
    holder.join(30)
    for thread in threads:
        thread.join(30)
    assert holder.error is None, holder.error
    assert not errors, errors
    return responses


def test_two_broker_writers_with_one_etag_one_wins(adam):
    broker = broker_create(
        membership=adam,
        name="Acme broker",
        host="mqtt.acme.test",
        port=8883,
        use_tls=True,
        topic_prefix="acme",
    )
    url = f"/api/v1/brokers/{broker.code}/"
    etag = api_client(adam).get(url)["ETag"]

    def put(name):
        def request():
            return api_client(adam).put(
                url,
                {"name": name, "host": "mqtt.acme.test", "port": 8883},
                format="json",
                HTTP_IF_MATCH=etag,
            )

        return request

    holder = RowHolder(Broker.objects.filter(pk=broker.pk))
    responses = _run_writers(holder, [put("First"), put("Second")], waiters=2)

    codes = sorted(r.status_code for r in responses)
    assert codes == [200, 412], [r.content for r in responses]
    winner = next(r for r in responses if r.status_code == 200)
    assert Broker.objects.get(pk=broker.pk).name == winner.json()["name"]
    loser = next(r for r in responses if r.status_code == 412)
    assert loser.json()["error"]["code"] == "precondition_failed"


def test_two_program_writers_with_one_etag_one_wins(olivia, pool_a):
    url = f"/api/v1/pools/{pool_a.code}/programs/"
    etag = api_client(olivia).get(url)["ETag"]
    day = {"mode": 1, "start": "10:00", "stop": "11:00"}

    def put(mode):
        def request():
            return api_client(olivia).put(
                url,
                {
                    "programs": [
                        {
                            "slot": 1,
                            "enabled": True,
                            "days": [{**day, "mode": mode}] + [None] * 6,
                        }
                    ]
                },
                format="json",
                HTTP_IF_MATCH=etag,
            )

        return request

    holder = RowHolder(Pool.objects.filter(pk=pool_a.pk))
    responses = _run_writers(holder, [put(1), put(2)], waiters=2)

    assert sorted(r.status_code for r in responses) == [200, 412], [
        r.content for r in responses
    ]
    assert Pool.objects.get(pk=pool_a.pk).config_version == 1


def test_a_pool_deleted_while_a_writer_waits_is_not_found(alice, tenant_a):
    pool = Pool.objects.create(tenant=tenant_a, name="Short-lived")
    url = f"/api/v1/pools/{pool.code}/"

    def patch():
        return api_client(alice).patch(url, {"name": "Renamed"}, format="json")

    holder = RowHolder(Pool.objects.filter(pk=pool.pk), then=lambda row: row.delete())
    (response,) = _run_writers(holder, [patch], waiters=1)

    assert response.status_code == 404, response.content
    made_up = api_client(alice).patch(
        f"/api/v1/pools/{uuid.uuid4()}/", {"name": "Renamed"}, format="json"
    )
    assert response.content == made_up.content


def test_the_pool_service_refuses_a_foreign_pool_as_not_found(alice, pool_b):
    from django.http import Http404

    with pytest.raises(Http404):
        pool_update(membership=alice, pool=pool_b, name="Mine now")
    assert Pool.objects.get(pk=pool_b.pk).name == "Globex Pool"
