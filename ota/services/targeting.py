"""Which of a tenant's devices a campaign reaches, and why the others are skipped."""

import datetime
import uuid
import zoneinfo
from dataclasses import dataclass, field

from django.conf import settings
from django.core.exceptions import ValidationError

from devices.models import Device, Pool
from ota.models import Release, validate_semver


def version_of(device: Device) -> str:
    """The device's version as releases name it: "ps1-1.2.0" -> "1.2.0"."""
    return (device.firmware_version or "").rsplit("-", 1)[-1]


def version_tuple(version: str) -> tuple[int, ...] | None:
    try:
        return tuple(int(x) for x in version.split("."))
    except ValueError:
        return None


def model_of(device: Device) -> str:
    """The hardware model of a device: the one its telemetry reported (`hw`,
    Device.hardware_model), else its protocol's default (settings.OTA_PROTOCOL_MODELS:
    firmware before `hw` ran on esp32 only). A protocol without a default (v3.1)
    names itself whatever the row says: those devices cannot take our updates."""
    models = getattr(settings, "OTA_PROTOCOL_MODELS", {"ps1": "esp32"})
    if device.protocol not in models:
        return device.protocol
    return device.hardware_model or models[device.protocol]


def skip_reason(device: Device, release: Release, below_version: str = "") -> str:
    """Why `device` is not updated to `release` ("" when it is)."""
    model = model_of(device)
    if model != release.hardware_model:
        return f"wrong hardware model ({model}, not {release.hardware_model})"
    current = version_tuple(version_of(device))
    target = version_tuple(release.version)
    if current is not None and target is not None and current >= target:
        return "already current"
    if release.min_from_version:
        if current is None:
            return "version unknown"
        if current < version_tuple(release.min_from_version):
            return f"below min_from_version {release.min_from_version}"
    if below_version:
        if current is None:
            return "version unknown"
        if current >= version_tuple(below_version):
            return f"not below {below_version}"
    return ""


@dataclass
class Preview:
    """What a campaign would reach: the devices matched and the others with why."""

    matched: list[Device] = field(default_factory=list)
    skipped: list[tuple[Device, str]] = field(default_factory=list)


def _resolve(model, tenant, values, what: str) -> list:
    """Objects, codes or pks of `model` -> the tenant's rows; any that is not the
    tenant's is "not found" (foreign and missing answer the same)."""
    pks, codes = set(), set()
    for v in values:
        if isinstance(v, model):
            pks.add(v.pk)
        elif isinstance(v, int):
            pks.add(v)
        else:
            try:
                codes.add(uuid.UUID(str(v)))
            except ValueError:
                raise ValidationError({what: f"{what[:-1]} not found"}) from None
    rows = list(model.objects.filter(tenant=tenant, pk__in=pks)) + list(
        model.objects.filter(tenant=tenant, code__in=codes)
    )
    if len({r.pk for r in rows}) != len(pks) + len(codes):
        raise ValidationError({what: f"{what[:-1]} not found"})
    return rows


def targets(*, tenant, target_all=True, pool_ids=(), device_ids=()):
    """The tenant's devices a campaign targets (a queryset)."""
    devices = Device.objects.filter(tenant=tenant).select_related("pool")
    if target_all:
        return devices
    pools = _resolve(Pool, tenant, pool_ids, "pools")
    chosen = _resolve(Device, tenant, device_ids, "devices")
    if not pools and not chosen:
        raise ValidationError({"targets": "Choose pools or devices, or all devices."})
    from django.db.models import Q

    return devices.filter(Q(pool__in=pools) | Q(pk__in=[d.pk for d in chosen]))


def campaign_preview(
    *,
    tenant,
    release: Release,
    target_all=True,
    pool_ids=(),
    device_ids=(),
    below_version="",
) -> Preview:
    """How many devices a campaign would reach, and why the others are skipped.
    Foreign pools or devices raise ValidationError ("not found")."""
    if below_version:
        validate_semver(below_version)
    preview = Preview()
    for device in targets(
        tenant=tenant, target_all=target_all, pool_ids=pool_ids, device_ids=device_ids
    ).order_by("device_id"):
        reason = skip_reason(device, release, below_version)
        if reason:
            preview.skipped.append((device, reason))
        else:
            preview.matched.append(device)
    return preview


def local_now(device: Device, now: datetime.datetime) -> datetime.datetime:
    """`now` in the time zone of the device's pool (UTC without a pool)."""
    name = device.pool.timezone if device.pool_id else "UTC"
    try:
        zone = zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        zone = datetime.UTC
    return now.astimezone(zone)


def in_window(start, end, local: datetime.datetime) -> bool:
    """A window [start, end) of local times; past midnight when start > end."""
    if start is None or end is None:
        return True
    t = local.time().replace(tzinfo=None)
    if start <= end:
        return start <= t < end
    return t >= start or t < end
