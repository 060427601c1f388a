"""Writes for tenancy and identity. Each state change lives here once and is called by
pages, the API and admin alike; each writes its own audit event.

team: invitations, memberships, tenant status. accounts: logins, passwords, sessions
and API tokens. two_factor: TOTP devices and recovery codes.
"""

from tenants.services.accounts import (
    SESSION_CODE_KEY,
    TokenRefused,
    access_changed,
    auth_logged_out,
    auth_login_failed,
    auth_login_succeeded,
    auth_password_changed,
    auth_password_reset,
    auth_token_refresh,
    user_logins_end,
    user_session_end,
    user_session_start,
    user_session_touch,
    user_sessions_end_others,
)
from tenants.services.team import (
    InvitationInvalid,
    invitation_accept,
    invitation_create,
    invitation_lookup,
    invitation_revoke,
    membership_remove,
    membership_remove_by_staff,
    membership_role_change,
    membership_role_change_by_staff,
    role_choices_for,
    tenant_set_status,
    tenant_two_factor_set,
)
from tenants.services.two_factor import (
    TwoFactorInvalid,
    two_factor_confirm,
    two_factor_disable,
    two_factor_recovery_codes_renew,
    two_factor_setup,
    two_factor_verify,
)

__all__ = [
    "SESSION_CODE_KEY",
    "InvitationInvalid",
    "TokenRefused",
    "TwoFactorInvalid",
    "access_changed",
    "auth_logged_out",
    "auth_login_failed",
    "auth_login_succeeded",
    "auth_password_changed",
    "auth_password_reset",
    "auth_token_refresh",
    "invitation_accept",
    "invitation_create",
    "invitation_lookup",
    "invitation_revoke",
    "membership_remove",
    "membership_remove_by_staff",
    "membership_role_change",
    "membership_role_change_by_staff",
    "role_choices_for",
    "tenant_set_status",
    "tenant_two_factor_set",
    "two_factor_confirm",
    "two_factor_disable",
    "two_factor_recovery_codes_renew",
    "two_factor_setup",
    "two_factor_verify",
    "user_logins_end",
    "user_session_end",
    "user_session_start",
    "user_session_touch",
    "user_sessions_end_others",
]
