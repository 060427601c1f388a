"""The audit trail is an append-only hash chain per tenant, and audit_verify names
the first broken link."""

import io
import threading

import pytest
from django.core.management import CommandError, call_command
from django.db import connection, connections

from audit.models import AppendOnlyError, AuditEvent
from audit.services import PLATFORM_CHAIN, audit_record


def verify() -> tuple[str, CommandError | None]:
    out = io.StringIO()
    try:
        call_command("audit_verify", stdout=out)
    except CommandError as exc:
        return out.getvalue(), exc
    return out.getvalue(), None


def raw_sql(sql: str, params: list) -> None:
    with connection.cursor() as cursor:
        cursor.execute(sql, params)


TABLE = AuditEvent._meta.db_table


@pytest.fixture
def events(alice, carol):
    """Three events in tenant A's chain, two in B's, one on the platform chain."""
    a = [
        audit_record(
            action=f"test.a{n}", tenant=alice.tenant, actor=alice.user, data={"n": n}
        )
        for n in range(1, 4)
    ]
    b = [
        audit_record(action=f"test.b{n}", tenant=carol.tenant, actor=carol.user)
        for n in range(1, 3)
    ]
    p = [audit_record(action="test.platform")]
    return a, b, p


def test_events_chain_per_tenant(events, alice, carol):
    a, b, p = events
    assert [e.seq for e in a] == [1, 2, 3]
    assert [e.seq for e in b] == [1, 2]
    assert {e.chain for e in a} == {alice.tenant.code.hex}
    assert {e.chain for e in b} == {carol.tenant.code.hex}
    assert p[0].chain == PLATFORM_CHAIN and p[0].seq == 1
    assert a[0].prev_hash == "0" * 64 and b[0].prev_hash == "0" * 64
    for chain in (a, b):
        for previous, event in zip(chain, chain[1:], strict=False):
            assert event.prev_hash == previous.hash
    for event in a + b + p:
        stored = AuditEvent.objects.get(pk=event.pk)
        assert stored.compute_hash() == stored.hash == event.hash


def test_append_only_through_the_orm(events):
    event = AuditEvent.objects.get(pk=events[0][0].pk)
    event.action = "rewritten"
    with pytest.raises(AppendOnlyError):
        event.save()
    with pytest.raises(AppendOnlyError):
        event.delete()
    with pytest.raises(AppendOnlyError):
        AuditEvent.objects.filter(pk=event.pk).update(action="rewritten")
    with pytest.raises(AppendOnlyError):
        AuditEvent.objects.filter(pk=event.pk).delete()
    with pytest.raises(AppendOnlyError):
        AuditEvent.objects.all().delete()
    assert AuditEvent.objects.get(pk=event.pk).action == "test.a1"
    assert AuditEvent.objects.count() == 6


def test_intact_chains_are_reported_intact(events, alice, carol):
    out, error = verify()
    assert error is None, out
    assert f"chain {alice.tenant.code.hex}: 3 events, intact" in out
    assert f"chain {carol.tenant.code.hex}: 2 events, intact" in out
    assert f"chain {PLATFORM_CHAIN}: 1 events, intact" in out
    assert "All audit chains intact (6 events)." in out


def test_empty_trail_is_intact(db):
    out, error = verify()
    assert error is None
    assert "All audit chains intact (0 events)." in out


@pytest.mark.parametrize(
    ("column", "value"),
    [("action", "test.innocent"), ("data", '{"n": 99}'), ("actor_label", "mallory")],
)
def test_tampered_event_is_named(events, alice, carol, column, value):
    victim = events[0][1]  # tenant A, seq 2
    raw_sql(f"UPDATE {TABLE} SET {column} = %s WHERE id = %s", [value, victim.pk])  # noqa: S608
    out, error = verify()
    assert error is not None
    assert "1 audit chain(s) broken" in str(error)
    line = f"chain {alice.tenant.code.hex}: BROKEN at event #2 ({victim.code})"
    assert line in out
    assert "content changed after it was written" in out
    # The other chains are unaffected.
    assert f"chain {carol.tenant.code.hex}: 2 events, intact" in out


def test_rewritten_hash_breaks_the_next_link(events, alice):
    # A forger who also recomputes the changed event's own hash is caught one
    # event later, where the link no longer matches.
    victim = AuditEvent.objects.get(pk=events[0][0].pk)
    forged = AuditEvent(
        **{
            f.attname: getattr(victim, f.attname)
            for f in AuditEvent._meta.concrete_fields
        }
    )
    forged.action = "test.forged"
    raw_sql(
        f"UPDATE {TABLE} SET action = %s, hash = %s WHERE id = %s",  # noqa: S608
        ["test.forged", forged.compute_hash(), victim.pk],
    )
    out, error = verify()
    assert error is not None
    nxt = events[0][1]
    assert f"chain {alice.tenant.code.hex}: BROKEN at event #2 ({nxt.code})" in out
    assert "link to the previous event broken" in out


def test_deleted_event_is_reported_missing(events, alice):
    raw_sql(f"DELETE FROM {TABLE} WHERE id = %s", [events[0][1].pk])  # noqa: S608
    out, error = verify()
    assert error is not None
    assert f"chain {alice.tenant.code.hex}: BROKEN at event #2" in out
    assert "event #2 is missing" in out


def test_deleted_last_event_is_reported_missing(events, alice):
    # The tail has no successor to break; the chain head still knows its length.
    raw_sql(f"DELETE FROM {TABLE} WHERE id = %s", [events[0][2].pk])  # noqa: S608
    out, error = verify()
    assert error is not None, out
    assert f"chain {alice.tenant.code.hex}: BROKEN" in out


@pytest.mark.postgres_only
@pytest.mark.django_db(transaction=True)
def test_concurrent_writers_get_gapless_sequence_numbers(tenant_a):
    if connection.vendor != "postgresql":
        pytest.skip("needs PostgreSQL row locks")
    per_thread, threads = 15, 4
    errors: list[BaseException] = []
    start = threading.Barrier(threads)

    def write(n: int) -> None:
        try:
            start.wait(timeout=10)
            for i in range(per_thread):
                audit_record(action=f"test.thread{n}.{i}", tenant=tenant_a)
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            errors.append(exc)
        finally:
            connections.close_all()

    workers = [threading.Thread(target=write, args=(n,)) for n in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=60)
    assert not errors, errors
    seqs = sorted(
        AuditEvent.objects.filter(chain=tenant_a.code.hex).values_list("seq", flat=True)
    )
    assert seqs == list(range(1, per_thread * threads + 1))
    out, error = verify()
    assert error is None, out
