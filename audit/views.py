"""The audit page of a tenant (admins and owners): its own events only, filterable,
paginated, and exportable as CSV with the same filters."""

import csv
import datetime as dt
import json

from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.http import Http404, StreamingHttpResponse
from django.shortcuts import render
from django.utils import timezone

from audit.details import action_label, event_details
from audit.forms import AuditFilterForm
from audit.selectors import (
    audit_actions_for_tenant,
    audit_events_for_tenant,
    audit_names_for_events,
)
from tenants.roles import Action
from tenants.selectors import membership_require

PAGE_SIZE = 25
CSV_COLUMNS = [
    "time",
    "action",
    "actor",
    "target_type",
    "target_code",
    "target",
    "data",
    "ip",
    "user_agent",
    "source",
    "request_id",
    "event_code",
    "seq",
    "hash",
]


def _membership(request):
    """The admin or owner acting for the session's tenant."""
    if request.membership is None:
        raise Http404("You are not a member of any tenant.")
    return membership_require(membership=request.membership, action=Action.MANAGE)


def _day_start(day: dt.date) -> dt.datetime:
    return timezone.make_aware(dt.datetime.combine(day, dt.time.min))


def _filtered(request, membership):
    """The filter form and, when it is valid, the tenant's matching events."""
    tenant = membership.tenant
    form = AuditFilterForm(
        request.GET or None, actions=audit_actions_for_tenant(tenant=tenant)
    )
    if form.is_bound and not form.is_valid():
        return form, None
    data = form.cleaned_data if form.is_bound else {}
    since, until = data.get("since"), data.get("until")
    events = audit_events_for_tenant(
        tenant=tenant,
        action=data.get("action", ""),
        actor=data.get("actor", "").strip(),
        since=_day_start(since) if since else None,
        # "To" is inclusive: everything before the start of the next day.
        until=_day_start(until + dt.timedelta(days=1)) if until else None,
    )
    return form, events


@login_required
def audit(request):
    membership = _membership(request)
    form, events = _filtered(request, membership)
    if events is None:
        return render(
            request, "audit/audit.html", {"form": form, "page": None}, status=400
        )
    page = Paginator(events, PAGE_SIZE).get_page(request.GET.get("page"))
    names = audit_names_for_events(tenant=membership.tenant, events=page.object_list)
    rows = [
        {
            "event": event,
            "label": action_label(event.action),
            "details": event_details(event, names=names),
        }
        for event in page.object_list
    ]
    query = request.GET.copy()
    query.pop("page", None)
    return render(
        request,
        "audit/audit.html",
        {"form": form, "page": page, "rows": rows, "query": query.urlencode()},
    )


def _cell(value) -> str:
    # Spreadsheets run cells that start with these as formulas; the data comes
    # partly from users (names, e-mails), so it is defused with a leading quote.
    text = "" if value is None else str(value)
    if text[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + text
    return text


class _Echo:
    def write(self, value):
        return value


def _csv_rows(events):
    writer = csv.writer(_Echo())
    yield writer.writerow(CSV_COLUMNS)
    for event in events.iterator(chunk_size=1000):
        yield writer.writerow(
            [
                _cell(value)
                for value in (
                    event.created_at.isoformat(),
                    event.action,
                    event.actor_label,
                    event.target_type,
                    event.target_code,
                    event.target_label,
                    json.dumps(event.data, sort_keys=True),
                    event.ip,
                    event.user_agent,
                    event.source,
                    event.request_id,
                    event.code,
                    event.seq,
                    event.hash,
                )
            ]
        )


@login_required
def audit_export(request):
    membership = _membership(request)
    form, events = _filtered(request, membership)
    if events is None:
        return render(
            request, "audit/audit.html", {"form": form, "page": None}, status=400
        )
    stamp = timezone.now().strftime("%Y%m%d-%H%M")
    response = StreamingHttpResponse(
        _csv_rows(events), content_type="text/csv; charset=utf-8"
    )
    filename = f"audit-{membership.tenant.slug}-{stamp}.csv"
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response
