"""The forms of the OTA pages: what a member types, checked for shape here; the
rules (versions, plan limits, targets of the tenant) are the engine's services'."""

from django import forms

from ota.models import validate_semver

TARGETS = [
    ("all", "All devices"),
    ("pools", "Chosen pools"),
    ("devices", "Chosen devices"),
]


class ReleaseForm(forms.Form):
    file = forms.FileField(help_text="The bundle built with firmware/tools/bundle.py.")
    version = forms.CharField(
        max_length=40, validators=[validate_semver], help_text="MAJOR.MINOR.PATCH"
    )
    hardware_model = forms.CharField(max_length=40, initial="esp32")
    min_from_version = forms.CharField(
        max_length=40,
        required=False,
        validators=[validate_semver],
        label="Upgrades from (lowest version)",
        help_text="Empty: any version.",
    )
    notes = forms.CharField(widget=forms.Textarea(attrs={"rows": 3}), required=False)


class CampaignForm(forms.Form):
    """A campaign's settings. Releases, pools and devices are offered from the
    member's tenant only (codes in the HTML, never integer ids)."""

    release = forms.ModelChoiceField(queryset=None, to_field_name="code")
    target = forms.ChoiceField(choices=TARGETS, initial="all", widget=forms.RadioSelect)
    pools = forms.ModelMultipleChoiceField(
        queryset=None, to_field_name="code", required=False
    )
    devices = forms.ModelMultipleChoiceField(
        queryset=None, to_field_name="code", required=False
    )
    below_version = forms.CharField(
        max_length=40,
        required=False,
        validators=[validate_semver],
        label="Only devices below version",
        help_text="Empty: every version.",
    )
    rate_per_minute = forms.IntegerField(
        min_value=0,
        max_value=100000,
        initial=10,
        label="Devices per minute",
        help_text="0: no limit.",
    )
    growth_factor = forms.FloatField(
        min_value=1.0,
        max_value=10.0,
        initial=1.0,
        label="Growth factor",
        help_text="The rate is multiplied by this after each successful batch (1: "
        "constant).",
    )
    abort_after = forms.IntegerField(
        min_value=1, max_value=100000, initial=5, label="Abort check after (devices)"
    )
    abort_percent = forms.IntegerField(
        min_value=1,
        max_value=100,
        initial=20,
        label="Abort at failures (%)",
        help_text="Share of failed devices among the finished ones that stops it.",
    )
    retries = forms.IntegerField(min_value=0, max_value=10, initial=2)
    max_attempts_per_day = forms.IntegerField(
        min_value=1, max_value=50, initial=3, label="Attempts per device per day"
    )
    window_start = forms.TimeField(
        required=False,
        widget=forms.TimeInput(attrs={"type": "time"}),
        label="Maintenance window from",
        help_text="In each pool's own time zone; empty: any time.",
    )
    window_end = forms.TimeField(
        required=False,
        widget=forms.TimeInput(attrs={"type": "time"}),
        label="Maintenance window until",
    )
    require_consent = forms.BooleanField(
        required=False,
        label="Wait for consent on each pool's page",
    )

    def __init__(self, *args, releases, pools, devices, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["release"].queryset = releases
        self.fields["pools"].queryset = pools
        self.fields["devices"].queryset = devices
        self.fields["release"].label_from_instance = lambda r: (
            f"{r.hardware_model} {r.version}" + ("" if r.tenant_id else " (platform)")
        )
        self.fields["devices"].label_from_instance = lambda d: (
            f"{d.device_id}" + (f" · {d.pool.name}" if d.pool_id else "")
        )

    def clean(self):
        data = super().clean()
        target = data.get("target")
        if target == "pools" and not data.get("pools"):
            self.add_error("pools", "Choose at least one pool.")
        if target == "devices" and not data.get("devices"):
            self.add_error("devices", "Choose at least one device.")
        if bool(data.get("window_start")) != bool(data.get("window_end")):
            self.add_error(
                "window_end", "Give both ends of the maintenance window, or neither."
            )
        return data

    def targets(self) -> dict:
        """The preview's and the service's target arguments."""
        data = self.cleaned_data
        target = data["target"]
        return {
            "target_all": target == "all",
            "pool_ids": [p.pk for p in data["pools"]] if target == "pools" else [],
            "device_ids": [d.pk for d in data["devices"]]
            if target == "devices"
            else [],
            "below_version": data["below_version"],
        }

    def settings(self) -> dict:
        """The rest of campaign_create's arguments."""
        data = self.cleaned_data
        return {
            "rate_per_minute": data["rate_per_minute"],
            "growth_factor": data["growth_factor"],
            "abort_after": data["abort_after"],
            "abort_ratio": data["abort_percent"] / 100,
            "retries": data["retries"],
            "max_attempts_per_day": data["max_attempts_per_day"],
            "window_start": data["window_start"],
            "window_end": data["window_end"],
            "require_consent": data["require_consent"],
        }
