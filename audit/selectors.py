"""Reading the audit trail: per-tenant listing and chain verification."""

import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from django.db.models import Q, QuerySet

from audit.details import Names, PoolNames
from audit.models import AuditChain, AuditEvent


def audit_events_for_tenant(
    *, tenant, action: str = "", actor: str = "", since=None, until=None
) -> QuerySet[AuditEvent]:
    """The tenant's own events, newest first, optionally filtered."""
    events = AuditEvent.objects.filter(tenant=tenant).select_related("tenant")
    if action:
        events = events.filter(action=action)
    if actor:
        events = events.filter(actor_label__icontains=actor)
    if since:
        events = events.filter(created_at__gte=since)
    if until:
        events = events.filter(created_at__lt=until)
    return events.order_by("-created_at", "-seq")


def audit_actions_for_tenant(*, tenant) -> list[str]:
    return list(
        AuditEvent.objects.filter(tenant=tenant)
        .order_by("action")
        .values_list("action", flat=True)
        .distinct()
    )


def _codes(values: Iterable) -> set[uuid.UUID]:
    codes = set()
    for value in values:
        try:
            codes.add(uuid.UUID(str(value)))
        except ValueError:
            continue
    return codes


def audit_names_for_events(*, tenant, events: Iterable[AuditEvent]) -> Names:
    """The names of the tenant's pools and brokers these events refer to (two
    queries), for the details in words. Another tenant's codes find nothing."""
    from devices.models import Broker, Pool

    events = list(events)
    pool_codes = _codes(
        [e.data.get("pool") for e in events if isinstance(e.data, dict)]
        + [e.target_code for e in events if e.target_type == "devices.Pool"]
    )
    broker_codes = _codes(
        e.data.get("broker") for e in events if isinstance(e.data, dict)
    )
    pools = {}
    if pool_codes:
        rows = Pool.objects.filter(tenant=tenant, code__in=pool_codes).values_list(
            "code", "name", "mode1_name", "mode2_name"
        )
        pools = {code.hex: PoolNames(name, m1, m2) for code, name, m1, m2 in rows}
    brokers = {}
    if broker_codes:
        # values_list: the encrypted secrets of the row are not read.
        rows = Broker.objects.filter(
            Q(tenant=tenant) | Q(is_platform=True), code__in=broker_codes
        ).values_list("code", "name")
        brokers = {code.hex: name for code, name in rows}
    return Names(pools=pools, brokers=brokers)


@dataclass(frozen=True)
class ChainBreak:
    chain: str
    seq: int
    code: str
    reason: str


def audit_chain_verify() -> Iterator[tuple[str, int, ChainBreak | None]]:
    """For each chain: its key, the number of events checked, and the first break."""
    heads = {chain.key: chain for chain in AuditChain.objects.all()}
    keys = set(heads) | set(
        AuditEvent.objects.order_by().values_list("chain", flat=True).distinct()
    )
    for key in sorted(keys):
        expected_prev = "0" * 64
        expected_seq = 1
        checked = 0
        broken = None
        events = (
            AuditEvent.objects.filter(chain=key)
            .select_related("tenant")
            .order_by("seq")
            .iterator(chunk_size=2000)
        )
        for event in events:
            checked += 1
            if event.seq != expected_seq:
                broken = ChainBreak(
                    key, expected_seq, "", f"event #{expected_seq} is missing"
                )
            elif event.prev_hash != expected_prev:
                broken = ChainBreak(
                    key, event.seq, str(event.code), "link to the previous event broken"
                )
            elif event.compute_hash() != event.hash:
                broken = ChainBreak(
                    key,
                    event.seq,
                    str(event.code),
                    "content changed after it was written",
                )
            if broken:
                break
            expected_prev = event.hash
            expected_seq += 1
        head = heads.get(key)
        # The chain head knows the length and last hash, so a deleted tail shows too.
        if broken is None and head is not None:
            if head.last_seq > expected_seq - 1:
                broken = ChainBreak(
                    key, expected_seq, "", f"event #{expected_seq} is missing"
                )
            elif head.last_hash != expected_prev:
                broken = ChainBreak(
                    key, expected_seq - 1, "", "the last event does not match the head"
                )
        yield key, checked, broken
