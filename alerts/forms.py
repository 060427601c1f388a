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
