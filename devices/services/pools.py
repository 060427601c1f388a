"""Writes for pools."""

from functools import lru_cache
from zoneinfo import available_timezones

from django.core.exceptions import ValidationError
from django.db import transaction
from django.http import Http404

from audit.services import audit_record
from billing.services import plan_limit_check
from devices.models import Pool
from devices.services.programs import config_publish_request
from tenants.models import Membership
from tenants.roles import Action
from tenants.selectors import membership_require


@lru_cache(maxsize=1)
def timezone_names() -> tuple[str, ...]:
    """The canonical IANA zones, sorted: those of tzdata's zone.tab (one per region of
    each country) and UTC. Not the aliases and oddities that available_timezones()
    also lists ("Factory", "localtime", "posixrules", "US/Eastern", "Etc/GMT+3")."""
    from importlib.resources import files

    table = files("tzdata.zoneinfo").joinpath("zone.tab").read_text("utf-8")
    names = {
        line.split("\t")[2]
        for line in table.splitlines()
        if line and not line.startswith("#")
    }
    return tuple(sorted((names | {"UTC"}) & available_timezones()))


def validate_timezone(name: str) -> None:
    if name not in timezone_names():
        raise ValidationError(
            {"timezone": f"Unknown time zone {name!r}: pick one such as Europe/Madrid."}
        )


def _validated(pool: Pool) -> Pool:
    errors: dict[str, list] = {}
    try:
        pool.full_clean(exclude=["tenant"])
    except ValidationError as exc:
        errors.update(exc.message_dict)
    if "timezone" not in errors:
        try:
            validate_timezone(pool.timezone)
        except ValidationError as exc:
            errors.update(exc.message_dict)
    for field in ("mode1_name", "mode2_name"):
        if field not in errors and not getattr(pool, field):
            errors[field] = ["Give the valve mode a name."]
    if (
        "mode1_name" not in errors
        and "mode2_name" not in errors
        and pool.mode1_name.casefold() == pool.mode2_name.casefold()
    ):
        errors["mode2_name"] = ["The two valve modes need different names."]
    if errors:
        raise ValidationError(errors)
    return pool


def pool_create(
    *,
    membership: Membership,
    name: str,
    timezone_name: str = "Europe/Madrid",
    mode1_name: str = "Cascada",
    mode2_name: str = "Eyectores",
) -> Pool:
    """Add a pool to the member's tenant (admins and owners)."""
    membership_require(membership=membership, action=Action.MANAGE)
    pool = Pool(
        tenant=membership.tenant,
        name=name.strip(),
        timezone=timezone_name.strip(),
        mode1_name=mode1_name.strip(),
        mode2_name=mode2_name.strip(),
    )
    with transaction.atomic():
        _validated(pool)
        plan_limit_check(tenant=membership.tenant, limit="pools")
        pool.save()
        audit_record(
            action="pool.created",
            tenant=membership.tenant,
            actor=membership.user,
            target=pool,
            data={"timezone": pool.timezone},
        )
    return pool


POOL_UPDATE_FIELDS = {
    "name": "name",
    "timezone_name": "timezone",
    "mode1_name": "mode1_name",
    "mode2_name": "mode2_name",
}


def pool_update(
    *,
    membership: Membership,
    pool: Pool,
    name: str | None = None,
    timezone_name: str | None = None,
    mode1_name: str | None = None,
    mode2_name: str | None = None,
) -> Pool:
    """Rename a pool or change its time zone and valve mode names; None keeps.

    A new time zone moves when programs run, so it bumps config_version: ps1
    devices have to apply the new configuration.
    """
    membership_require(membership=membership, action=Action.MANAGE)
    if pool.tenant_id != membership.tenant_id:
        # The access layer never hands out a foreign pool; direct callers get the
        # same answer as a made-up code.
        raise Http404("No such pool.")
    given = {
        "name": name,
        "timezone_name": timezone_name,
        "mode1_name": mode1_name,
        "mode2_name": mode2_name,
    }
    with transaction.atomic():
        try:
            pool = Pool.objects.select_for_update().get(pk=pool.pk)
        except Pool.DoesNotExist:
            # Deleted while this writer waited for the lock.
            raise Http404("No such pool.") from None
        changes: dict[str, dict[str, str]] = {}
        for arg, value in given.items():
            if value is None:
                continue
            field = POOL_UPDATE_FIELDS[arg]
            value = value.strip()
            if getattr(pool, field) != value:
                changes[field] = {"from": getattr(pool, field), "to": value}
                setattr(pool, field, value)
        if not changes:
            return pool
        update_fields = list(changes)
        if "timezone" in changes:
            pool.config_version += 1
            update_fields.append("config_version")
        _validated(pool).save(update_fields=update_fields)
        if "timezone" in changes:
            config_publish_request(pool=pool)
        audit_record(
            action="pool.updated",
            tenant=pool.tenant,
            actor=membership.user,
            target=pool,
            data={"changes": changes},
        )
    return pool
