"""Forms of the devices pages. They parse and check the shape of input; the services
validate again and write."""

from django import forms
from django.core.exceptions import NON_FIELD_ERRORS, ValidationError

from devices.models import validate_topic_prefix
from devices.services.brokers import (
    BROKER_FIELDS,
    validate_broker_host,
    validate_ca_certificate,
    validate_websocket_url,
)
from devices.services.pools import timezone_names


class WriteOnlyTextInput(forms.TextInput):
    """A text input that never renders a value, not even the one just submitted."""

    def format_value(self, value):
        return None


def apply_service_errors(
    form: forms.Form, exc: ValidationError, field_map: dict[str, str] | None = None
) -> None:
    """Put a service's ValidationError on the form, field by field where it can.

    field_map renames model fields to form fields (timezone -> timezone_name)."""
    if not hasattr(exc, "error_dict"):
        form.add_error(None, exc)
        return
    for field, errors in exc.message_dict.items():
        field = (field_map or {}).get(field, field)
        target = field if field in form.fields else None
        if field == NON_FIELD_ERRORS:
            target = None
        form.add_error(target, errors)


class BrokerForm(forms.Form):
    """Add or edit a tenant's broker. Username and password are write-only: blank
    keeps the stored value on edit; the clear boxes empty them."""

    name = forms.CharField(max_length=80)
    host = forms.CharField(
        max_length=253,
        validators=[validate_broker_host],
        help_text="Host name or IP address, without mqtt:// or a port.",
    )
    port = forms.IntegerField(min_value=1, max_value=65535, initial=8883)
    use_tls = forms.BooleanField(label="TLS", required=False, initial=True)
    ca_certificate = forms.CharField(
        label="CA certificate",
        required=False,
        widget=forms.Textarea(attrs={"rows": 4, "spellcheck": "false"}),
        validators=[validate_ca_certificate],
        help_text="PEM of the CA that signed the broker's certificate; empty to "
        "use the system's trusted CAs.",
    )
    websocket_url = forms.CharField(
        label="WebSocket URL",
        max_length=300,
        required=False,
        validators=[validate_websocket_url],
        help_text="Optional, for example wss://mqtt.example.com:8084/mqtt.",
    )
    topic_prefix = forms.CharField(
        max_length=100, initial="devices", validators=[validate_topic_prefix]
    )
    username = forms.CharField(
        max_length=200,
        required=False,
        strip=False,
        widget=WriteOnlyTextInput(attrs={"autocomplete": "off"}),
    )
    password = forms.CharField(
        max_length=200,
        required=False,
        strip=False,
        widget=forms.PasswordInput(
            render_value=False, attrs={"autocomplete": "new-password"}
        ),
    )
    clear_username = forms.BooleanField(required=False, label="Clear the username")
    clear_password = forms.BooleanField(required=False, label="Clear the password")

    def __init__(self, *args, editing: bool = False, **kwargs):
        super().__init__(*args, **kwargs)
        self.editing = editing
        if editing:
            for name in ("username", "password"):
                self.fields[name].help_text = (
                    "Leave empty to keep the stored one; type it again when you "
                    "change the host, port, TLS or CA certificate."
                )
        else:
            del self.fields["clear_username"]
            del self.fields["clear_password"]

    def clean(self):
        cleaned = super().clean()
        for name in ("username", "password"):
            if cleaned.get(f"clear_{name}") and cleaned.get(name):
                self.add_error(
                    name, f"Either type a new {name} or tick “clear”, not both."
                )
        return cleaned

    def service_kwargs(self) -> dict:
        """Arguments for broker_create/broker_update: None keeps a secret, "" clears."""
        data = self.cleaned_data
        kwargs = {name: data[name] for name in BROKER_FIELDS}
        for name in ("username", "password"):
            if data.get(name):
                kwargs[name] = data[name]
            elif self.editing:
                kwargs[name] = "" if data.get(f"clear_{name}") else None
            else:
                kwargs[name] = ""
        return kwargs


class BrokerRotationForm(forms.Form):
    """New credentials staged for the bridge to switch to; write-only."""

    new_username = forms.CharField(
        label="New username",
        max_length=200,
        required=False,
        strip=False,
        widget=WriteOnlyTextInput(attrs={"autocomplete": "off"}),
        help_text="Leave empty to keep the current username.",
    )
    new_password = forms.CharField(
        label="New password",
        max_length=200,
        strip=False,
        widget=forms.PasswordInput(
            render_value=False, attrs={"autocomplete": "new-password"}
        ),
    )


def _timezone_choices():
    return [(name, name) for name in timezone_names()]


class PoolForm(forms.Form):
    """A pool's name, time zone and valve mode names (add and settings pages)."""

    SERVICE_FIELDS = {"timezone": "timezone_name"}

    name = forms.CharField(max_length=120)
    timezone_name = forms.ChoiceField(
        label="Time zone",
        choices=_timezone_choices,
        initial="Europe/Madrid",
        error_messages={
            "invalid_choice": "Unknown time zone %(value)s: pick one from the list."
        },
    )
    mode1_name = forms.CharField(
        label="Valve mode 1 name", max_length=40, initial="Cascada"
    )
    mode2_name = forms.CharField(
        label="Valve mode 2 name", max_length=40, initial="Eyectores"
    )

    def clean(self):
        cleaned = super().clean()
        one, two = cleaned.get("mode1_name"), cleaned.get("mode2_name")
        if one and two and one.casefold() == two.casefold():
            self.add_error("mode2_name", "The two valve modes need different names.")
        return cleaned
