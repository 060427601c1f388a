"""Staff admin changes go into the audit trail like every other change.

Usage: subclass `AuditedModelAdmin` instead of `admin.ModelAdmin`. Adds, changes and
deletes (single and bulk) are recorded as "admin.created", "admin.changed" and
"admin.deleted" with the staff user as actor. Only the names of the changed fields are
stored, never their values, so a secret typed into a form never reaches the trail.

Admin actions that call a service (for example suspending a tenant) do not need this:
the service writes its own event.
"""

import dataclasses
from typing import Any

from django.contrib import admin
from django.db import models, transaction

from audit.services import audit_record
from poolsaas.request_context import RequestContext, current_request_context

ADMIN_SOURCE = "admin"


def admin_context() -> RequestContext:
    """The current request's context (ip, user agent, request id), marked as admin."""
    return dataclasses.replace(current_request_context(), source=ADMIN_SOURCE)


def _formset_changes(formsets) -> list[dict[str, Any]]:
    # Inline rows (a membership edited under its tenant, say) are part of the change;
    # their field names are recorded the same way, again without values.
    changes: list[dict[str, Any]] = []
    for formset in formsets or ():
        label = formset.model._meta.label
        for _obj in getattr(formset, "new_objects", ()):
            changes.append({"model": label, "op": "added"})
        for _obj, fields in getattr(formset, "changed_objects", ()):
            changes.append({"model": label, "op": "changed", "fields": sorted(fields)})
        for _obj in getattr(formset, "deleted_objects", ()):
            changes.append({"model": label, "op": "deleted"})
    return changes


class AuditedModelAdmin(admin.ModelAdmin):
    """A ModelAdmin whose add/change/delete are written to the audit trail."""

    def get_audit_tenant(self, obj: models.Model, *, deleting: bool = False):
        """The tenant whose chain gets the event: `obj.tenant` when the model has one.

        Override for models that are tenants themselves or reach theirs indirectly.
        `deleting` is true when obj is about to be deleted (an event cannot point at a
        tenant that is going away, audit rows protect their tenant).
        """
        return getattr(obj, "tenant", None)

    def audit_admin_change(
        self, request, obj: models.Model, *, action: str, data: dict[str, Any]
    ) -> None:
        audit_record(
            action=action,
            tenant=self.get_audit_tenant(obj, deleting=action == "admin.deleted"),
            actor=request.user,
            target=obj,
            data={"model": obj._meta.label, **data},
            context=admin_context(),
        )

    def save_related(self, request, form, formsets, change):
        # Runs after save_model, inside the admin's transaction, once the object, its
        # many-to-many fields and its inlines are saved: one event for the whole change.
        super().save_related(request, form, formsets, change)
        fields = sorted(form.changed_data)
        inlines = _formset_changes(formsets)
        obj = form.instance
        if not change:
            data: dict[str, Any] = {"fields": fields}
            if inlines:
                data["inlines"] = inlines
            self.audit_admin_change(request, obj, action="admin.created", data=data)
        elif fields or inlines:
            data = {"fields": fields}
            if inlines:
                data["inlines"] = inlines
            self.audit_admin_change(request, obj, action="admin.changed", data=data)

    def delete_model(self, request, obj):
        # Recorded before the delete (the target's code is still known) in the same
        # transaction, so a failed delete leaves no event behind.
        with transaction.atomic():
            self.audit_admin_change(request, obj, action="admin.deleted", data={})
            super().delete_model(request, obj)

    def delete_queryset(self, request, queryset):
        with transaction.atomic():
            for obj in queryset:
                self.audit_admin_change(request, obj, action="admin.deleted", data={})
            super().delete_queryset(request, queryset)


class ReadOnlyAdminMixin:
    """Staff may look and search, never add, change or delete (history and trails are
    written by services only). Put it before the ModelAdmin base class."""

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False
