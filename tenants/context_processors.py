from tenants.roles import role_allows


def tenancy(request):
    membership = getattr(request, "membership", None)
    return {
        "current_membership": membership,
        "current_tenant": getattr(request, "tenant", None),
        "user_memberships": getattr(request, "memberships", []),
        "can_manage": bool(membership and role_allows(membership.role, "manage")),
        "can_control": bool(membership and role_allows(membership.role, "control")),
    }
