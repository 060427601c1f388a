import datetime as dt

from django import forms

from audit.details import action_label

# Dates outside these are typing mistakes (or probes): refused with a message rather
# than turned into datetimes the database or Python cannot hold (9999-12-31 + 1 day).
EARLIEST = dt.date(2000, 1, 1)
LATEST = dt.date(2999, 12, 31)


class AuditFilterForm(forms.Form):
    """Filters of the audit page and its CSV export (all optional)."""

    action = forms.ChoiceField(label="Action", required=False)
    actor = forms.CharField(label="Actor", max_length=254, required=False)
    since = forms.DateField(
        label="From",
        required=False,
        widget=forms.DateInput(attrs={"type": "date", "min": EARLIEST, "max": LATEST}),
    )
    until = forms.DateField(
        label="To",
        required=False,
        widget=forms.DateInput(attrs={"type": "date", "min": EARLIEST, "max": LATEST}),
    )

    def __init__(self, *args, actions: list[str], **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["action"].choices = [("", "Any action")] + sorted(
            ((action, action_label(action)) for action in actions),
            key=lambda choice: choice[1],
        )

    def _clean_day(self, name: str) -> dt.date | None:
        day = self.cleaned_data.get(name)
        if day is not None and not EARLIEST <= day <= LATEST:
            raise forms.ValidationError(
                f"Enter a date between {EARLIEST.isoformat()} and {LATEST.isoformat()}."
            )
        return day

    def clean_since(self):
        return self._clean_day("since")

    def clean_until(self):
        return self._clean_day("until")

    def clean(self):
        cleaned = super().clean()
        since, until = cleaned.get("since"), cleaned.get("until")
        if since and until and until < since:
            self.add_error("until", "The end date is before the start date.")
        return cleaned
