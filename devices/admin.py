"""Staff admin for brokers, pools, devices and their history (telemetry samples are in
telemetry/admin.py).

Secrets are write-only here too: the forms never load or render a decrypted
username or password (the querysets defer them), a blank input keeps the stored
value, and the lists say only whether one is set. Every change goes to the audit
trail through AuditedModelAdmin; history rows (commands, events, programs) are
read-only because their own services write them.
"""

from urllib.parse import urlparse

from django import forms
from django.contrib import admin
from django.core.exceptions import ValidationError
from django.db.models import TextField
from django.db.models.functions import Cast
from django.utils import timezone

from audit.admin_mixins import AuditedModelAdmin, ReadOnlyAdminMixin
from billing.services import plan_limit_form_check
from devices.fields import SecretDecryptionError, decrypt_secret
from devices.forms import WriteOnlyTextInput
from devices.models import (
    Broker,
    Command,
    Device,
    DeviceEvent,
    Pool,
    Program,
)
from devices.services.brokers import (
    ADDRESS_FIELDS,
    BROKER_FIELDS,
    secrets_required_for_address_change,
    validate_broker_address,
    validate_broker_host,
    validate_ca_certificate,
    validate_websocket_url,
)
from devices.services.brokers.credentials import (
    broker_credentials_clear_for_address_change,
)
from devices.services.pools import validate_timezone

SET = "••• set"
NOT_SET = "not set"
UNREADABLE = "⚠ cannot be decrypted"


def _secret_status(token: str | None) -> str:
    """Set / not set from the raw stored token; an empty secret is no token, a
    token is decrypted only to tell an unreadable one (rows stored before empty
    secrets were kept as no token hold encrypted empty strings)."""
    if not token:
        return NOT_SET
    try:
        return SET if decrypt_secret(token) else NOT_SET
    except SecretDecryptionError:
        return UNREADABLE


def _with_raw_secrets(queryset, names: list[str]):
    # Deferred secrets are never decrypted when a row loads (an unreadable one
    # cannot break the list or the form); the raw tokens feed the status columns.
    return queryset.defer(*names).annotate(
        **{f"raw_{name}": Cast(name, TextField()) for name in names}
    )


def _secret_input(label: str, widget: forms.Widget) -> forms.CharField:
    return forms.CharField(
        label=label, required=False, strip=False, max_length=200, widget=widget
    )


def _password_widget() -> forms.Widget:
    return forms.PasswordInput(render_value=False, attrs={"autocomplete": "off"})


def _username_widget() -> forms.Widget:
    return WriteOnlyTextInput(attrs={"autocomplete": "off"})


class WriteOnlySecretsForm(forms.ModelForm):
    """A model form whose secret fields are replaced by write-only inputs.

    Subclasses declare a `new_<secret>` input and a `clear_<secret>` box per secret
    and list them in SECRETS as (model field, label). Blank keeps the stored value.
    """

    SECRETS: tuple[tuple[str, str], ...] = ()

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        raw = getattr(self.instance, "_raw_secrets", {})
        for name, _ in self.SECRETS:
            status = _secret_status(raw.get(name)) if self.instance.pk else NOT_SET
            if f"new_{name}" in self.fields:
                self.fields[
                    f"new_{name}"
                ].help_text = f"Currently: {status}. Leave empty to keep it."

    def clean(self):
        cleaned = super().clean()
        for name, label in self.SECRETS:
            if cleaned.get(f"new_{name}") and cleaned.get(f"clear_{name}"):
                self.add_error(
                    f"new_{name}",
                    f"Either type a new {label.lower()} or tick “clear”, not both.",
                )
        return cleaned

    def apply_secrets(self, instance) -> list[str]:
        """Copy typed or cleared secrets onto the instance; return their names."""
        changed = []
        for name, _ in self.SECRETS:
            value = self.cleaned_data.get(f"new_{name}")
            if value:
                setattr(instance, name, value)
                changed.append(name)
            elif self.cleaned_data.get(f"clear_{name}"):
                setattr(instance, name, "")
                changed.append(name)
        return changed


class BrokerAdminForm(WriteOnlySecretsForm):
    SECRETS = (("username", "Username"), ("password", "Password"))
    new_username = _secret_input("Username", _username_widget())
    clear_username = forms.BooleanField(label="Clear the username", required=False)
    new_password = _secret_input("Password", _password_widget())
    clear_password = forms.BooleanField(label="Clear the password", required=False)

    class Meta:
        model = Broker
        # username and password are replaced by the write-only fields.
        fields = ["tenant", *BROKER_FIELDS]

    def clean_host(self):
        host = self.cleaned_data["host"].strip()
        validate_broker_host(host)
        return host

    def clean_ca_certificate(self):
        pem = self.cleaned_data["ca_certificate"].strip()
        validate_ca_certificate(pem)
        return pem

    def clean_websocket_url(self):
        url = self.cleaned_data["websocket_url"].strip()
        validate_websocket_url(url)
        return url

    def clean(self):
        cleaned = super().clean()
        if not self.instance.is_platform and not cleaned.get("tenant"):
            self.add_error(
                "tenant", "A broker other than the platform's needs a tenant."
            )
        if self.instance.is_platform and cleaned.get("tenant"):
            self.add_error("tenant", "The platform broker belongs to no tenant.")
        if not self.instance.is_platform:
            # A tenant's broker is dialled by the bridge and the connection test:
            # the same SSRF rule as on the tenant's own page.
            self._check_public("host", cleaned.get("host"))
            url = cleaned.get("websocket_url")
            self._check_public("websocket_url", urlparse(url).hostname if url else "")
        if self.instance.pk:
            # Staff edits follow the tenant page's rule: a stored secret goes only
            # to the address it was typed for.
            supplied = {
                name
                for name in ("username", "password")
                if cleaned.get(f"new_{name}") or cleaned.get(f"clear_{name}")
            }
            errors = secrets_required_for_address_change(
                broker=self.instance, changed=self.changed_data, supplied=supplied
            )
            for name, message in errors.items():
                self.add_error(f"new_{name}", message)
        return cleaned

    def _check_public(self, field: str, host: str | None) -> None:
        if not host:
            return
        try:
            validate_broker_address(host)
        except ValidationError as exc:
            self.add_error(field, exc)


class DeviceAdminForm(WriteOnlySecretsForm):
    SECRETS = (("mqtt_password", "MQTT password"),)
    new_mqtt_password = _secret_input("MQTT password", _password_widget())
    clear_mqtt_password = forms.BooleanField(
        label="Clear the MQTT password", required=False
    )

    class Meta:
        model = Device
        fields = ["tenant", "device_id", "pool", "broker", "topic_prefix", "protocol"]

    def clean(self):
        cleaned = super().clean()
        tenant, pool, broker = (
            cleaned.get("tenant"),
            cleaned.get("pool"),
            cleaned.get("broker"),
        )
        # The admin can pick any row; keep a device inside one tenant.
        if tenant and pool and pool.tenant_id != tenant.pk:
            self.add_error("pool", "This pool belongs to another tenant.")
        if (
            tenant
            and broker
            and not broker.is_platform
            and broker.tenant_id != tenant.pk
        ):
            self.add_error("broker", "This broker belongs to another tenant.")
        if tenant and self.instance.pk is None:
            plan_limit_form_check(self, tenant=tenant, limit="devices")
        return cleaned


class SecretsAdminMixin:
    """Loads secrets raw (never decrypted into the form) and writes typed ones."""

    secret_fields: tuple[str, ...] = ()

    def get_queryset(self, request):
        return _with_raw_secrets(
            super().get_queryset(request), list(self.secret_fields)
        )

    def get_object(self, request, object_id, from_field=None):
        obj = super().get_object(request, object_id, from_field)
        if obj is not None:
            obj._raw_secrets = {
                name: getattr(obj, f"raw_{name}", None) for name in self.secret_fields
            }
        return obj

    def save_model(self, request, obj, form, change):
        changed = form.apply_secrets(obj)
        if changed and hasattr(obj, "secrets_changed_at"):
            obj.secrets_changed_at = timezone.now()
        super().save_model(request, obj, form, change)


@admin.register(Broker)
class BrokerAdmin(SecretsAdminMixin, AuditedModelAdmin):
    form = BrokerAdminForm
    secret_fields = ("username", "password")
    list_display = (
        "name",
        "tenant",
        "is_platform",
        "host",
        "port",
        "use_tls",
        "username_status",
        "password_status",
        "secrets_changed_at",
    )
    list_filter = ("is_platform", "use_tls", "tenant")
    search_fields = ("name", "host", "code", "tenant__name", "tenant__slug")
    list_select_related = ("tenant",)
    autocomplete_fields = ("tenant",)
    readonly_fields = (
        "code",
        "is_platform",
        "secrets_changed_at",
        "credentials_pending_since",
        "credentials_refused_at",
        "credentials_rotated_at",
        "created_at",
    )

    def save_model(self, request, obj, form, change):
        # A staged rotation was given for the old address, as the secrets were.
        if change and any(name in ADDRESS_FIELDS for name in form.changed_data):
            broker_credentials_clear_for_address_change(obj)
        super().save_model(request, obj, form, change)

    @admin.display(description="username")
    def username_status(self, obj):
        return _secret_status(getattr(obj, "raw_username", None))

    @admin.display(description="password")
    def password_status(self, obj):
        return _secret_status(getattr(obj, "raw_password", None))


class PoolAdminForm(forms.ModelForm):
    class Meta:
        model = Pool
        fields = ["tenant", "name", "timezone", "mode1_name", "mode2_name", "settings"]

    def clean_timezone(self):
        value = self.cleaned_data["timezone"].strip()
        try:
            validate_timezone(value)
        except ValidationError as exc:
            raise ValidationError(exc.message_dict["timezone"]) from None
        return value

    def clean(self):
        cleaned = super().clean()
        tenant = cleaned.get("tenant")
        if tenant and self.instance.pk is None:
            plan_limit_form_check(self, tenant=tenant, limit="pools")
        return cleaned


@admin.register(Pool)
class PoolAdmin(AuditedModelAdmin):
    form = PoolAdminForm
    list_display = ("name", "tenant", "timezone", "config_version", "created_at")
    list_filter = ("tenant",)
    search_fields = ("name", "code", "tenant__name", "device__device_id")
    list_select_related = ("tenant",)
    autocomplete_fields = ("tenant",)
    readonly_fields = ("code", "config_version", "override_until", "created_at")

    def save_model(self, request, obj, form, change):
        if change and "timezone" in form.changed_data:
            # Programs now run at other instants: devices must re-apply config.
            obj.config_version += 1
        super().save_model(request, obj, form, change)


@admin.register(Device)
class DeviceAdmin(SecretsAdminMixin, AuditedModelAdmin):
    form = DeviceAdminForm
    secret_fields = ("mqtt_password",)
    list_display = (
        "device_id",
        "tenant",
        "pool",
        "protocol",
        "online",
        "last_seen_at",
        "firmware_version",
        "hardware_model",
        "broker",
        "mqtt_password_status",
    )
    list_filter = ("online", "protocol", "hardware_model", "tenant", "broker")
    search_fields = ("device_id", "code", "tenant__name", "pool__name")
    list_select_related = ("tenant", "pool", "broker")
    raw_id_fields = ("pool", "broker")
    autocomplete_fields = ("tenant",)
    readonly_fields = (
        "code",
        "online",
        "last_seen_at",
        "state",
        "firmware_version",
        "hardware_model",
        "config_version_applied",
        "claimed_at",
        "mqtt_username",
        "credentials_generation",
        "credentials_rotation_started_at",
        "credentials_rotated_at",
        "credentials_rotation_failed_at",
        "credentials_rotation_failure",
        "created_at",
    )

    @admin.display(description="MQTT password")
    def mqtt_password_status(self, obj):
        return _secret_status(getattr(obj, "raw_mqtt_password", None))


class ReadOnlyAdmin(ReadOnlyAdminMixin, AuditedModelAdmin):
    """History written by services (bridge, scheduler, programs): look, never touch."""


@admin.register(Command)
class CommandAdmin(ReadOnlyAdmin):
    list_display = ("created_at", "device", "op", "value", "status", "source", "actor")
    list_filter = ("status", "op", "source", "tenant")
    search_fields = ("code", "device__device_id", "actor__email", "error")
    list_select_related = ("device", "actor")
    date_hierarchy = "created_at"


@admin.register(DeviceEvent)
class DeviceEventAdmin(ReadOnlyAdmin):
    list_display = ("ts", "kind", "device", "pool", "message", "actor")
    list_filter = ("kind", "tenant")
    search_fields = ("code", "kind", "message", "device__device_id", "pool__name")
    list_select_related = ("device", "pool", "actor")
    date_hierarchy = "ts"


@admin.register(Program)
class ProgramAdmin(ReadOnlyAdmin):
    # Programs change through the pool page (programs_save), which bumps the
    # pool's config version and pushes it to the device.
    list_display = ("pool", "slot", "enabled", "updated_at")
    list_filter = ("enabled", "slot", "tenant")
    search_fields = ("code", "pool__name", "pool__code")
    list_select_related = ("pool",)
