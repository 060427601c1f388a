"""Roles, their order, and what each action needs.

owner > admin > operator > viewer: a role can do everything the roles below it can.
"""

from django.db import models


class Role(models.TextChoices):
    OWNER = "owner", "Owner"
    ADMIN = "admin", "Admin"
    OPERATOR = "operator", "Operator"
    VIEWER = "viewer", "Viewer"


RANK = {Role.VIEWER: 10, Role.OPERATOR: 20, Role.ADMIN: 30, Role.OWNER: 40}


class Action(models.TextChoices):
    """What a caller wants to do with an object; each needs a minimum role."""

    VIEW = "view"
    CONTROL = "control"
    MANAGE = "manage"
    OWN = "own"


MINIMUM_ROLE = {
    Action.VIEW: Role.VIEWER,
    Action.CONTROL: Role.OPERATOR,
    Action.MANAGE: Role.ADMIN,
    Action.OWN: Role.OWNER,
}


def role_allows(role: str, action: str) -> bool:
    return RANK[Role(role)] >= RANK[MINIMUM_ROLE[Action(action)]]


def role_at_least(role: str, minimum: str) -> bool:
    return RANK[Role(role)] >= RANK[Role(minimum)]


def two_factor_required_for(*, membership) -> bool:
    """Whether the tenant requires a second factor of this member (owners and
    admins of a tenant that turned the requirement on). Pure: no query."""
    return membership.tenant.require_two_factor and membership.role in (
        Role.OWNER,
        Role.ADMIN,
    )
