import hashlib
import json
import uuid

from django.conf import settings
from django.db import models


class AppendOnlyError(RuntimeError):
    """Audit events are never changed or deleted."""


class AuditEventQuerySet(models.QuerySet):
    def update(self, **kwargs):
        raise AppendOnlyError("Audit events cannot be updated.")

    def delete(self):
        raise AppendOnlyError("Audit events cannot be deleted.")


class AuditChain(models.Model):
    """The head of one hash chain: one per tenant, plus 'platform' for the rest.

    Writers lock this row, so events of one chain get gapless sequence numbers.
    """

    key = models.CharField(max_length=40, unique=True)
    last_seq = models.PositiveBigIntegerField(default=0)
    last_hash = models.CharField(max_length=64, default="0" * 64)

    def __str__(self) -> str:
        return self.key


class AuditEvent(models.Model):
    """One security-relevant action, linked to the previous event of its chain by hash.

    Written only by audit.services.audit_record. Changing any stored field breaks the
    chain at this event, which `manage.py audit_verify` reports.
    """

    code = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    chain = models.CharField(max_length=40)
    seq = models.PositiveBigIntegerField()
    tenant = models.ForeignKey(
        "tenants.Tenant",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="audit_events",
    )
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="audit_events",
    )
    actor_label = models.CharField(max_length=254, blank=True)
    action = models.CharField(max_length=60, db_index=True)
    target_type = models.CharField(max_length=60, blank=True)
    target_code = models.CharField(max_length=64, blank=True)
    target_label = models.CharField(max_length=200, blank=True)
    data = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField()
    ip = models.GenericIPAddressField(null=True, blank=True)
    user_agent = models.CharField(max_length=400, blank=True)
    request_id = models.CharField(max_length=64, blank=True)
    source = models.CharField(max_length=20, default="web")
    prev_hash = models.CharField(max_length=64)
    hash = models.CharField(max_length=64)

    objects = AuditEventQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-seq"]
        constraints = [
            models.UniqueConstraint(fields=["chain", "seq"], name="audit_chain_seq")
        ]
        indexes = [
            models.Index(fields=["tenant", "-created_at"]),
            models.Index(fields=["tenant", "action"]),
        ]

    def __str__(self) -> str:
        return f"{self.action} by {self.actor_label or 'system'}"

    def save(self, *args, **kwargs):
        if not self._state.adding:
            raise AppendOnlyError("Audit events cannot be updated.")
        super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):
        raise AppendOnlyError("Audit events cannot be deleted.")

    def canonical(self) -> bytes:
        """The bytes the hash covers: every stored field but the hashes themselves."""
        body = {
            "chain": self.chain,
            "seq": self.seq,
            "tenant": str(self.tenant.code) if self.tenant_id else None,
            "actor": self.actor_label,
            "actor_id": self.actor_id,
            "action": self.action,
            "target_type": self.target_type,
            "target_code": self.target_code,
            "target_label": self.target_label,
            "data": self.data,
            "created_at": self.created_at.isoformat(timespec="microseconds"),
            "ip": self.ip,
            "user_agent": self.user_agent,
            "request_id": self.request_id,
            "source": self.source,
            "code": str(self.code),
        }
        return json.dumps(body, sort_keys=True, separators=(",", ":")).encode()

    def compute_hash(self) -> str:
        digest = hashlib.sha256()
        digest.update(self.prev_hash.encode())
        digest.update(self.canonical())
        return digest.hexdigest()
