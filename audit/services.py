"""Writing the audit trail. Services call audit_record explicitly for every
security-relevant change, whatever the entry point (page, API, bridge, task)."""

import datetime as dt
import json
from typing import Any

from django.db import models, transaction
from django.utils import timezone

from audit.models import AuditChain, AuditEvent
from poolsaas.request_context import RequestContext, current_request_context

PLATFORM_CHAIN = "platform"


def chain_key_for(tenant) -> str:
    return tenant.code.hex if tenant is not None else PLATFORM_CHAIN


def _json_safe(data: dict[str, Any] | None) -> dict[str, Any]:
    # Round-trip now so the hash covers exactly what the JSON column will return.
    return json.loads(json.dumps(data or {}, default=str))


def audit_record(
    *,
    action: str,
    tenant=None,
    actor=None,
    target: models.Model | None = None,
    data: dict[str, Any] | None = None,
    context: RequestContext | None = None,
    actor_label: str = "",
) -> AuditEvent:
    """Append one event to the tenant's chain (or the platform chain)."""
    context = context or current_request_context()
    key = chain_key_for(tenant)
    with transaction.atomic():
        AuditChain.objects.get_or_create(key=key)
        chain = AuditChain.objects.select_for_update().get(key=key)
        now = timezone.now()
        event = AuditEvent(
            chain=key,
            seq=chain.last_seq + 1,
            tenant=tenant,
            actor=actor if actor is not None and actor.pk else None,
            actor_label=actor_label or (actor.email if actor is not None else ""),
            action=action,
            target_type=target._meta.label if target is not None else "",
            target_code=str(getattr(target, "code", "") or getattr(target, "pk", ""))
            if target is not None
            else "",
            target_label=str(target)[:200] if target is not None else "",
            data=_json_safe(data),
            # Truncated to whole microseconds, as every database stores them.
            created_at=now.astimezone(dt.UTC),
            ip=context.ip,
            user_agent=context.user_agent[:400],
            request_id=context.request_id,
            source=context.source,
            prev_hash=chain.last_hash,
        )
        event.hash = event.compute_hash()
        event.save()
        chain.last_seq = event.seq
        chain.last_hash = event.hash
        chain.save(update_fields=["last_seq", "last_hash"])
    return event
