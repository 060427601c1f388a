"""Writes for pools."""

from zoneinfo import available_timezones

from django.core.exceptions import ValidationError
from django.db import transaction

from audit.services import audit_record
from devices.models import Pool
from tenants.models import Membership
from tenants.roles import Action
from tenants.selectors import membership_require


def _validated(instance, exclude=None):
    instance.full_clean(exclude=exclude)
    return instance


def validate_timezone(name: str) -> None:
    if name not in available_timezones():
        raise ValidationError({"timezone": f"Unknown time zone {name!r}."})


def pool_create(
    *,
    membership: Membership,
    name: str,
    timezone_name: str = "Europe/Madrid",
    mode1_name: str = "Cascada",
    mode2_name: str = "Eyectores",
) -> Pool:
    membership_require(membership=membership, action=Action.MANAGE)
    validate_timezone(timezone_name)
    pool = Pool(
        tenant=membership.tenant,
        name=name.strip(),
        timezone=timezone_name,
        mode1_name=mode1_name.strip(),
        mode2_name=mode2_name.strip(),
    )
    with transaction.atomic():
        _validated(pool).save()
        audit_record(
            action="pool.created",
            tenant=membership.tenant,
            actor=membership.user,
            target=pool,
        )
    return pool
