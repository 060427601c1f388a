"""The rules pages' form: one per kind, for a tenant default or a pool's override.
The service (alerts.services.alert_rule_validate) holds the ranges; the form only
parses what the browser sent."""

from django import forms


class RuleForm(forms.Form):
    threshold = forms.FloatField(label="Threshold")
    hysteresis = forms.FloatField(
        label="Hysteresis",
        initial=1.0,
        help_text="How far back past the threshold before it resolves.",
    )
    renotify_minutes = forms.IntegerField(
        label="Repeat every (min)", initial=0, help_text="0: notify once."
    )
    enabled = forms.BooleanField(label="On", required=False, initial=True)

    def __init__(self, *args, rule=None, **kwargs):
        if rule is not None and "initial" not in kwargs:
            kwargs["initial"] = {
                "threshold": rule.threshold,
                "hysteresis": rule.hysteresis,
                "renotify_minutes": rule.renotify_minutes,
                "enabled": rule.enabled,
            }
        super().__init__(*args, **kwargs)
        for field in self.fields.values():
            if not isinstance(field, forms.BooleanField):
                field.widget.attrs.setdefault("inputmode", "decimal")
                field.widget.attrs.setdefault("step", "any")


class PreferenceForm(forms.Form):
    """A member's own alert preferences (alerts.services.alert_preference_set
    checks them; the form parses)."""

    channel = forms.ChoiceField(label="How", widget=forms.RadioSelect, initial="email")
    kinds = forms.MultipleChoiceField(
        label="Which alerts",
        required=False,
        widget=forms.CheckboxSelectMultiple,
        help_text="None ticked: every kind.",
    )
    quiet_start = forms.TimeField(
        label="Quiet from",
        required=False,
        widget=forms.TimeInput(attrs={"type": "time"}, format="%H:%M"),
    )
    quiet_end = forms.TimeField(
        label="until",
        required=False,
        widget=forms.TimeInput(attrs={"type": "time"}, format="%H:%M"),
    )
    safety_ignores_quiet = forms.BooleanField(
        label="Freeze risk and device offline reach me during quiet hours",
        required=False,
        initial=True,
    )

    def __init__(self, *args, preference=None, **kwargs):
        from alerts.models import AlertPreference, Kind

        if preference is not None and "initial" not in kwargs:
            kwargs["initial"] = {
                "channel": preference.channel,
                "kinds": preference.kinds,
                "quiet_start": preference.quiet_start,
                "quiet_end": preference.quiet_end,
                "safety_ignores_quiet": preference.safety_ignores_quiet,
            }
        super().__init__(*args, **kwargs)
        self.fields["channel"].choices = AlertPreference.Channel.choices
        self.fields["kinds"].choices = Kind.choices
