"""The SQLite pass of `make test` runs on a file database in WAL mode with a busy
timeout, like `make run`: the shared-cache in-memory default answers SQLITE_LOCKED
to a second writing thread (the bridge's writer), which nothing waits for."""

import threading

import pytest
from django.db import connection, connections

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def sqlite_only():
    if connection.vendor != "sqlite":
        pytest.skip("checks the SQLite pass; this run is on " + connection.vendor)


def test_the_test_database_is_a_file_in_wal_mode(sqlite_only):
    name = connection.settings_dict["NAME"]
    assert "memory" not in str(name) and str(name).endswith(".sqlite3")
    with connection.cursor() as cursor:
        cursor.execute("PRAGMA journal_mode")
        assert cursor.fetchone()[0] == "wal"
        cursor.execute("PRAGMA busy_timeout")
        assert cursor.fetchone()[0] >= 5000


def test_two_threads_write_at_once_without_a_lock_error(sqlite_only, tenant_a):
    from devices.models import Pool

    errors: list[BaseException] = []
    start = threading.Barrier(2)

    def write(n: int) -> None:
        try:
            start.wait(5)
            for i in range(30):
                Pool.objects.create(tenant=tenant_a, name=f"pool {n}-{i}")
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=write, args=(n,)) for n in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    assert Pool.objects.filter(tenant=tenant_a).count() == 60
