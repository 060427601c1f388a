"""Every stored field of an AuditEvent is covered: change any one of them behind the
ORM's back (raw SQL) and audit_verify fails, naming that event.

The field list comes from the model itself, so a field added later without hash
coverage makes these tests fail instead of silently escaping the chain.
"""

import datetime as dt
import io
import uuid

import pytest
from django.core.management import CommandError, call_command
from django.db import connection, models

from audit.models import AuditEvent
from audit.services import audit_record
from poolsaas.request_context import RequestContext

pytestmark = pytest.mark.django_db

TABLE = AuditEvent._meta.db_table

# Stored but legitimately outside the hash, with the reason.
OUTSIDE_HASH = {
    # The surrogate key: no page, URL, export or link uses it (the public code and
    # the chain position (chain, seq) are covered).
    "id",
}
# Moving an event out of its place is caught by the chain's structure (a gap at
# its position) before its content is even hashed; the event is then named by its
# position only.
POSITION_FIELDS = {"chain", "seq"}

FIELDS = [f for f in AuditEvent._meta.concrete_fields if f.name not in OUTSIDE_HASH]


def _verify() -> tuple[str, CommandError | None]:
    out = io.StringIO()
    try:
        call_command("audit_verify", stdout=out)
    except CommandError as exc:
        return out.getvalue(), exc
    return out.getvalue(), None


@pytest.fixture
def trail(alice, pool_a):
    """Three events in tenant A's chain with every field filled in."""
    context = RequestContext(
        request_id="req-tamper-0001",
        ip="198.51.100.7",
        user_agent="tamper-test/1.0",
        source="api",
    )
    return [
        audit_record(
            action=f"test.tamper{n}",
            tenant=alice.tenant,
            actor=alice.user,
            target=pool_a,
            data={"n": n, "words": ["a", "b"]},
            context=context,
        )
        for n in range(1, 4)
    ]


@pytest.fixture
def others(carol):
    """Another tenant and another user, for foreign keys to point at."""
    return {"tenant": carol.tenant, "actor": carol.user}


def _changed(field: models.Field, event: AuditEvent, others: dict):
    """A different, valid value for the field (the Python value)."""
    current = getattr(event, field.name)
    if isinstance(field, models.ForeignKey):
        return others[field.name]
    if isinstance(field, models.UUIDField):
        return uuid.uuid4()
    if isinstance(field, models.JSONField):
        return {**current, "n": 99}
    if isinstance(field, models.DateTimeField):
        return current + dt.timedelta(seconds=1)
    if isinstance(field, models.GenericIPAddressField):
        return "203.0.113.99"
    if isinstance(field, models.PositiveBigIntegerField):
        return current + 100
    if isinstance(field, models.CharField):
        if len(current) == 64 and field.name.endswith("hash"):
            return "f" * 64
        return (current + "-x")[: field.max_length] if current else "x"
    raise AssertionError(
        f"AuditEvent.{field.name} ({type(field).__name__}) is new: teach this test "
        "to change it, and make sure canonical() covers it"
    )


def _cleared(field: models.Field):
    if field.null:
        return None
    if field.blank and isinstance(field, models.CharField):
        return ""
    return _NOT_CLEARABLE


_NOT_CLEARABLE = object()

CASES = [(f.name, "changed") for f in FIELDS] + [
    (f.name, "cleared") for f in FIELDS if _cleared(f) is not _NOT_CLEARABLE
]


def _write(field: models.Field, value, pk: int) -> None:
    param = field.get_db_prep_save(
        value.pk if isinstance(value, models.Model) else value, connection
    )
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {TABLE} SET {field.column} = %s WHERE id = %s",  # noqa: S608
            [param, pk],
        )


def test_the_field_list_is_the_whole_model():
    # The list is derived, never written out: a new field is a new case.
    names = {f.name for f in AuditEvent._meta.concrete_fields}
    assert {f.name for f in FIELDS} | OUTSIDE_HASH == names
    assert {"chain", "actor", "target_code", "ip", "user_agent", "source"} <= names


def test_an_untouched_trail_verifies(trail):
    out, error = _verify()
    assert error is None, out


@pytest.mark.parametrize(("name", "how"), CASES)
def test_tampering_any_stored_field_is_named(trail, others, alice, name, how):
    field = AuditEvent._meta.get_field(name)
    victim = AuditEvent.objects.get(pk=trail[1].pk)  # tenant A, seq 2
    value = _changed(field, victim, others) if how == "changed" else _cleared(field)
    assert value != getattr(victim, field.name)
    _write(field, value, victim.pk)

    out, error = _verify()

    assert error is not None, f"{name} {how} went unnoticed:\n{out}"
    stored = AuditEvent.objects.get(pk=victim.pk)
    line = f"chain {alice.tenant.code.hex}: BROKEN at event #2"
    if name not in POSITION_FIELDS:
        # Named by its public code (as it reads now, for a tampered code).
        line += f" ({stored.code})"
    assert line in out, out


@pytest.mark.parametrize("name", [f.name for f in FIELDS if f.name != "hash"])
def test_the_hash_itself_covers_every_field(trail, others, name):
    """The structure (positions, links) catches some tampering on its own; this
    pins that the hash covers each field as well, so no field rests on one check."""
    field = AuditEvent._meta.get_field(name)
    event = AuditEvent.objects.get(pk=trail[1].pk)
    assert event.compute_hash() == event.hash
    setattr(event, field.name, _changed(field, event, others))
    assert event.compute_hash() != event.hash, f"{name} is not in the hash"
    if _cleared(field) is not _NOT_CLEARABLE:
        setattr(event, field.name, _cleared(field))
        assert event.compute_hash() != event.hash, f"clearing {name} is not seen"


def test_a_chain_renamed_whole_is_caught_by_the_hash(alice, carol):
    """Moving a whole one-event chain (events and head) under another key keeps its
    structure intact: only the hash can tell."""
    from audit.models import AuditChain

    event = audit_record(action="test.alone", tenant=alice.tenant, actor=alice.user)
    new_key = uuid.uuid4().hex
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {TABLE} SET chain = %s WHERE id = %s",  # noqa: S608
            [new_key, event.pk],
        )
    AuditChain.objects.filter(key=event.chain).update(key=new_key)
    out, error = _verify()
    assert error is not None, out
    assert f"chain {new_key}: BROKEN at event #1 ({event.code})" in out
    assert "content changed after it was written" in out


def test_a_deleted_tail_is_named_missing(trail, alice):
    # The last event has no successor whose link could break: the head knows.
    with connection.cursor() as cursor:
        cursor.execute(f"DELETE FROM {TABLE} WHERE id = %s", [trail[2].pk])  # noqa: S608
    out, error = _verify()
    assert error is not None, out
    assert (
        f"chain {alice.tenant.code.hex}: BROKEN at event #3: event #3 is missing" in out
    )


def test_a_rewritten_tail_with_its_hash_recomputed_is_caught_by_the_head(trail, alice):
    """A forger who rewrites the last event and recomputes its hash leaves every
    link intact: only the chain head's last hash tells."""
    last = AuditEvent.objects.get(pk=trail[2].pk)
    last.action = "test.forged"
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {TABLE} SET action = %s, hash = %s WHERE id = %s",  # noqa: S608
            ["test.forged", last.compute_hash(), last.pk],
        )
    out, error = _verify()
    assert error is not None, out
    assert (
        f"chain {alice.tenant.code.hex}: BROKEN at event #3: "
        "the last event does not match the head"
    ) in out
