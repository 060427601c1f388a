"""Template helpers of the alerts pages."""

import datetime as dt

from django import template

register = template.Library()


@register.filter
def parse_iso(value: str | None) -> dt.datetime | None:
    """An ISO 8601 time from alerts.selectors.alert_as_dict, back to a datetime (for
    the `ago` and `date` filters)."""
    if not value:
        return None
    try:
        return dt.datetime.fromisoformat(value)
    except (TypeError, ValueError):
        return None
