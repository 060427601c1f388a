"""Template filters of the devices pages."""

import datetime as dt

from django import template
from django.utils import timezone

register = template.Library()


@register.filter
def ago(value: dt.datetime | None, now: dt.datetime | None = None) -> str:
    """A past moment in the words static/js/ago.js uses, so that a page and its live
    updates never disagree: "just now", "5 min ago", "3 h ago", "2 d ago"."""
    if value is None:
        return "never"
    seconds = max(0.0, ((now or timezone.now()) - value).total_seconds())
    if seconds < 60:
        return "just now"
    if seconds < 3600:
        return f"{int(seconds // 60)} min ago"
    if seconds < 86400:
        return f"{int(seconds // 3600)} h ago"
    return f"{int(seconds // 86400)} d ago"
