"""Who is calling: the one place that turns a login into a user and a membership.

Every entry point asks here: the pages (TenantMiddleware, from the session), the API
(TenantJWTAuthentication, from a Bearer access token), both WebSocket consumers (a
session or an access token, and again before each command) and the coming MQTT
gateway (its CONNECT password). Nothing else decodes a token or looks a user's
membership up.

A caller is refused, with the reason as the exception:

- NotAuthenticated: no valid login (a bad or expired token, a disabled account, a
  password changed or a login ended since, a session logged out).
- NotAMember: the user is not, or no longer, a member of the tenant asked for. It is
  an Http404: missing and foreign tenants read alike.
- TenantSuspended: the tenant is suspended (the access layer's own PermissionDenied).
- TwoFactorRequired: owners and admins of a tenant that requires a second factor,
  from a login that did not pass one.

Tokens: `sub` names the user (their code), `tenant` the tenant (code hex). `pwd`
(simplejwt's CHECK_REVOKE_TOKEN, a digest of the password hash) ends a token when the
password changes, `ep` (the user's token_epoch) when the user logs out their other
sessions, and `otp` says the login passed a second factor. The `role` claim is a hint
for clients only: the membership is read again on every call.
"""

import copy
import dataclasses
import secrets
import uuid
from dataclasses import dataclass
from typing import Literal

from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import Http404
from django.utils import timezone
from django.utils.crypto import constant_time_compare
from rest_framework_simplejwt.exceptions import TokenError
from rest_framework_simplejwt.settings import api_settings as jwt_settings
from rest_framework_simplejwt.token_blacklist.models import OutstandingToken
from rest_framework_simplejwt.tokens import AccessToken, RefreshToken, Token
from rest_framework_simplejwt.utils import get_md5_hash_password

from tenants.models import Membership, Tenant, User
from tenants.roles import two_factor_required_for
from tenants.selectors import TenantSuspended, parse_code

__all__ = [
    "Caller",
    "NotAMember",
    "NotAuthenticated",
    "TenantSuspended",
    "TwoFactorRequired",
]

TENANT_CLAIM = "tenant"
EPOCH_CLAIM = "ep"
OTP_CLAIM = "otp"
# When the login happened; rotation keeps it (and the expiry it set).
AUTH_TIME_CLAIM = "auth_time"
# Which login a token belongs to (the refresh token and its access tokens share it;
# rotation keeps it): the gateway's password lives as long as that login.
LOGIN_ID_CLAIM = "lid"
# The tenant a browser session works in (the switcher sets it).
SESSION_KEY = "tenant_code"

How = Literal["session", "jwt", "mqtt"]


class NotAuthenticated(Exception):
    """No valid login. `code` is the API's error code for it."""

    def __init__(self, message: str, *, code: str = "not_authenticated"):
        super().__init__(message)
        self.message = message
        self.code = code


class NotAMember(Http404):
    """The user is not (or no longer) a member of the tenant asked for."""

    def __init__(
        self,
        message: str = "You are no longer a member of this tenant.",
        *,
        code: str = "not_a_member",
    ):
        super().__init__(message)
        self.message = message
        self.code = code


class TwoFactorRequired(PermissionDenied):
    """The tenant requires a second factor of this member; the login passed none."""

    code = "two_factor_required"

    def __init__(self, tenant: Tenant):
        self.tenant = tenant
        self.message = (
            f"{tenant.name} requires two-factor authentication: log in again with "
            "your code."
        )
        super().__init__(self.message)


@dataclass(frozen=True)
class Caller:
    """A user acting in one tenant, and how they logged in.

    `second_factor`: the login passed a second factor. `session_key` (how="session")
    or `token` (how="jwt"/"mqtt", the validated token) is what caller_still_valid
    checks again; `client_id` is the MQTT client's. `memberships` lists all of the
    user's memberships, by tenant name, when the session resolution read them (the
    tenant switcher shows them); it is empty for tokens.
    """

    user: User
    membership: Membership
    how: How
    second_factor: bool = False
    session_key: str | None = None
    token: Token | None = None
    client_id: str | None = None
    memberships: tuple[Membership, ...] = ()

    @property
    def tenant(self) -> Tenant:
        return self.membership.tenant

    @property
    def expires_at(self) -> float | None:
        """When the token behind this caller expires (epoch seconds); None for a
        session, which ends when it is logged out."""
        if self.token is None:
            return None
        exp = self.token.get("exp")
        return float(exp) if isinstance(exp, int | float) else None


# --- memberships --------------------------------------------------------------------


def memberships_for_user(*, user: User) -> QuerySet[Membership]:
    """The user's memberships, with their tenants, by tenant name."""
    if not user.is_authenticated:
        return Membership.objects.none()
    return (
        Membership.objects.filter(user=user)
        .select_related("tenant")
        .order_by("tenant__name")
    )


def membership_for_user(*, user: User, tenant_code=None) -> Membership:
    """The user's membership in the given tenant, or their first one by name.

    Raises NotAMember (an Http404) when the user is not a member, whether or not
    the tenant exists. A suspended tenant's member still gets the membership (the
    pages tell them why they cannot use it).
    """
    memberships = memberships_for_user(user=user)
    if tenant_code is not None:
        try:
            code = parse_code(tenant_code)
        except Http404:
            raise NotAMember() from None
        memberships = memberships.filter(tenant__code=code)
    membership = memberships.first()
    if membership is None:
        raise NotAMember()
    return membership


# --- the checks -----------------------------------------------------------------------


def caller_check(caller: Caller) -> None:
    """TenantSuspended or TwoFactorRequired when the caller's tenant may not be used
    by them now (the other checks are made when the caller is resolved)."""
    tenant = caller.tenant
    if not tenant.is_active:
        raise TenantSuspended(f"{tenant.name} is suspended. Contact poolsaas support.")
    if caller_two_factor_missing(caller):
        raise TwoFactorRequired(tenant)


def caller_two_factor_missing(caller: Caller) -> bool:
    """Whether the tenant requires a second factor of this member and the login
    passed none (pure: no query)."""
    return two_factor_required_for(membership=caller.membership) and (
        not caller.second_factor
    )


def caller_still_valid(caller: Caller) -> Caller:
    """The same caller read again, for what outlives a request (a socket, before each
    command and whenever access changes): NotAuthenticated once its login has ended
    (the account disabled, the session logged out or made with an old password, the
    token's password or epoch no longer the user's), NotAMember once the user left
    the tenant. The tenant's own checks are caller_check's."""
    user = User.objects.filter(pk=caller.user.pk, is_active=True).first()
    if user is None:
        raise NotAuthenticated("This account is disabled.", code="user_inactive")
    if caller.how == "session":
        if not session_is_current(session_key=caller.session_key, user=user):
            # Logged out, or the password changed: what it opened ends with it.
            raise NotAuthenticated("You are logged out.", code="session_ended")
    else:
        assert caller.token is not None
        _token_login_check(user=user, token=caller.token)
        if caller.how == "mqtt":
            _mqtt_login_check(caller.token)
    membership = membership_for_user(user=user, tenant_code=caller.tenant.code)
    return dataclasses.replace(caller, user=user, membership=membership)


# --- sessions -------------------------------------------------------------------------


def caller_from_session(
    *,
    user: User,
    session,
    tenant_code=None,
    second_factor: bool | None = None,
    check: bool = True,
) -> Caller:
    """The caller of a logged-in browser session (`user` is the session's user, as
    Django's authentication resolved it).

    The tenant: `tenant_code` if given (NotAMember when the user is not in it), else
    the one chosen in the session, else (that one left, or none chosen) the user's
    first by name. `second_factor`: whether the session passed one, when the caller
    knows better (django-otp's request.user.is_verified()); by default the session's
    verified-device mark. `check` also runs caller_check.
    """
    from django_otp import DEVICE_ID_SESSION_KEY

    if user is None or not user.is_authenticated:
        raise NotAuthenticated("Log in first.")
    if not user.is_active:
        raise NotAuthenticated("This account is disabled.", code="user_inactive")
    memberships = tuple(memberships_for_user(user=user))
    if tenant_code is not None:
        try:
            wanted = parse_code(tenant_code).hex
        except Http404:
            raise NotAMember() from None
        chosen = next((m for m in memberships if m.tenant.code.hex == wanted), None)
        if chosen is None:
            raise NotAMember()
    else:
        wanted = session.get(SESSION_KEY) if session is not None else None
        chosen = next((m for m in memberships if m.tenant.code.hex == wanted), None)
        chosen = chosen or (memberships[0] if memberships else None)
        if chosen is None:
            raise NotAMember("You are not a member of any tenant.")
    if second_factor is None:
        second_factor = session is not None and bool(session.get(DEVICE_ID_SESSION_KEY))
    caller = Caller(
        user=user,
        membership=chosen,
        how="session",
        second_factor=second_factor,
        session_key=session.session_key if session is not None else None,
        memberships=memberships,
    )
    if check:
        caller_check(caller)
    return caller


def caller_from_request(request) -> Caller | None:
    """The caller of a page request, unchecked (the pages answer a suspended tenant
    and a missing second factor with their own notices); None when nobody is logged
    in or the user is in no tenant."""
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return None
    is_verified = getattr(user, "is_verified", None)
    try:
        return caller_from_session(
            user=user,
            session=request.session,
            second_factor=bool(is_verified is not None and is_verified()),
            check=False,
        )
    except (NotAuthenticated, NotAMember):
        return None


def session_is_current(*, session_key: str | None, user: User) -> bool:
    """Whether a browser session still logs this user in: it exists, names the user,
    and was made with the user's current password (Django checks the same on every
    request; sockets, which outlive requests, ask here)."""
    from importlib import import_module

    from django.conf import settings
    from django.contrib.auth import HASH_SESSION_KEY
    from django.contrib.auth import SESSION_KEY as USER_KEY

    if not session_key or not user.is_active:
        return False
    data = import_module(settings.SESSION_ENGINE).SessionStore(session_key).load()
    if str(data.get(USER_KEY)) != str(user.pk):
        return False
    return constant_time_compare(
        data.get(HASH_SESSION_KEY, ""), user.get_session_auth_hash()
    )


# --- tokens ---------------------------------------------------------------------------


def bearer_token(header: str | bytes | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` header value, else None."""
    if isinstance(header, bytes):
        header = header.decode("latin1")
    kind, _, token = (header or "").partition(" ")
    if kind.lower() == "bearer" and token.strip():
        return token.strip()
    return None


def caller_from_access_token(
    token: str | bytes, *, tenant_code=None, check: bool = True
) -> Caller:
    """The caller of a simplejwt access token (the API's Bearer token, a socket's).

    A token that names a tenant acts in that tenant only (a different `tenant_code`
    is NotAMember); one that names none acts in `tenant_code`, else in the user's
    only tenant (NotAuthenticated when they are in several, or none). `check` also
    runs caller_check.
    """
    return _caller_from_token(
        _read(AccessToken, token), how="jwt", tenant_code=tenant_code, check=check
    )


def caller_from_mqtt_password(password: str, *, client_id: str | None = None) -> Caller:
    """The caller of an MQTT CONNECT (the gateway's), with every check.

    The password is an access token of a login (POST /api/login's `token`). The
    v3.1 dashboard never refreshes it and MQTT.js reconnects with the same password,
    so here it counts for as long as its login lives, not for its own 15 minutes:
    its signature and type must be valid, and it may have expired, as long as

    - its login is still alive: one of the user's refresh tokens of the same login
      (`lid`, kept through rotations) is neither used up nor expired, so a logout
      (which blacklists it) ends it at once, even before the access token expires;
    - the login is within REFRESH_TOKEN_LIFETIME of when it was made (`auth_time`);
    - the password and the token epoch are still the token's (a password change or
      "log out other sessions" ends it), as for every token.

    A token without a login id (made before logins had one) counts only until it
    expires. docs/gateway.md and docs/security.md describe this lifetime.
    """
    token = _read(_GatewayAccessToken, password)
    _mqtt_login_check(token)
    caller = _caller_from_token(token, how="mqtt", tenant_code=None, check=True)
    return dataclasses.replace(caller, client_id=client_id)


class _GatewayAccessToken(AccessToken):
    """An access token read with a leeway of a whole login's lifetime: its expiry
    is then judged by _mqtt_login_check."""

    def get_token_backend(self):
        backend = copy.copy(super().get_token_backend())
        backend.leeway = jwt_settings.REFRESH_TOKEN_LIFETIME
        return backend


def _mqtt_login_check(token: Token) -> None:
    """NotAuthenticated unless the login of a gateway password is alive (see
    caller_from_mqtt_password)."""
    now = timezone.now().timestamp()
    exp = token.get("exp")
    expired = not isinstance(exp, int | float) or exp <= now
    login_id = token.get(LOGIN_ID_CLAIM)
    if not login_id:
        if expired:
            raise NotAuthenticated("Invalid or expired token.", code="token_not_valid")
        return
    auth_time = token.get(AUTH_TIME_CLAIM)
    lifetime = jwt_settings.REFRESH_TOKEN_LIFETIME.total_seconds()
    if not isinstance(auth_time, int | float) or auth_time + lifetime <= now:
        raise NotAuthenticated(
            "This login is over: log in again.", code="token_not_valid"
        )
    user = token_user(token)
    if user is None or not login_is_alive(user=user, login_id=str(login_id)):
        raise NotAuthenticated(
            "This login was ended (logged out): log in again.", code="session_ended"
        )


def login_is_alive(*, user: User, login_id: str) -> bool:
    """Whether one of the user's refresh tokens of this login is neither used up
    (blacklisted: refreshed or logged out) nor expired."""
    candidates = OutstandingToken.objects.filter(
        user=user, expires_at__gt=timezone.now(), blacklistedtoken__isnull=True
    ).order_by("-created_at")[:50]
    for outstanding in candidates:
        try:
            refresh = RefreshToken(outstanding.token, verify=False)
        except TokenError:
            continue
        if refresh.get(LOGIN_ID_CLAIM) == login_id:
            return True
    return False


def caller_from_refresh_token(refresh: RefreshToken) -> Caller:
    """The caller of a refresh token read by refresh_token_read, with every check: a
    changed password, an ended login, a removed member, a suspended tenant or a
    missing second factor end its refreshing too."""
    return _caller_from_token(refresh, how="jwt", tenant_code=None, check=True)


class _RotatingRefreshToken(RefreshToken):
    """Checked for use under a row lock by auth_token_refresh, not here: a check
    before the lock would let two requests with one token both pass it."""

    def check_blacklist(self) -> None:
        pass


def refresh_token_read(raw: str, *, for_rotation: bool = False) -> RefreshToken:
    """A refresh token's claims, once its signature, type and expiry are checked
    (NotAuthenticated otherwise). `for_rotation` leaves the "already used" check to
    the rotation, which makes it under a lock."""
    return _read(_RotatingRefreshToken if for_rotation else RefreshToken, raw)


def refresh_token_for(
    *, membership: Membership, second_factor: bool = False
) -> RefreshToken:
    """The refresh token of a new login of this membership (its access token is
    `.access_token`)."""
    user = membership.user
    refresh = RefreshToken.for_user(user)
    refresh[TENANT_CLAIM] = membership.tenant.code.hex
    # A hint for clients only; every call re-reads the membership.
    refresh["role"] = membership.role
    refresh[EPOCH_CLAIM] = user.token_epoch
    refresh[AUTH_TIME_CLAIM] = int(timezone.now().timestamp())
    refresh[LOGIN_ID_CLAIM] = secrets.token_hex(8)
    if second_factor:
        refresh[OTP_CLAIM] = True
    # for_user stored the token before these claims: store it as handed out, so
    # login_is_alive can read its login id.
    OutstandingToken.objects.filter(jti=refresh[jwt_settings.JTI_CLAIM]).update(
        token=str(refresh)
    )
    return refresh


def token_user(token: Token) -> User | None:
    """The user a token names, active or not; None when there is no such user."""
    try:
        code = uuid.UUID(str(token.get(jwt_settings.USER_ID_CLAIM)))
    except ValueError:
        return None
    return User.objects.filter(code=code).first()


def token_tenant(token: Token) -> Tenant | None:
    """The tenant a token names, if its user is still a member of it (for the audit
    trail of a logout); None otherwise."""
    user = token_user(token)
    code = token.get(TENANT_CLAIM)
    if user is None or not code:
        return None
    try:
        return membership_for_user(user=user, tenant_code=code).tenant
    except NotAMember:
        return None


def _read(token_class: type[Token], raw: str | bytes) -> Token:
    try:
        return token_class(raw)
    except TokenError as exc:
        raise NotAuthenticated(
            "Invalid or expired token.", code="token_not_valid"
        ) from exc


def _token_membership(token: Token, tenant_code) -> Membership | None:
    """The membership, with its user and tenant, that a token naming its tenant acts
    through, in one query (the API's every request); None when the token names no
    tenant, names another than `tenant_code`, or its user is not (or no longer) a
    member: the caller then goes the longer way, which says which it is."""
    claimed = token.get(TENANT_CLAIM)
    if not claimed or (tenant_code is not None and _hex(tenant_code) != _hex(claimed)):
        return None
    try:
        user_code = uuid.UUID(str(token.get(jwt_settings.USER_ID_CLAIM)))
        tenant = parse_code(claimed)
    except (ValueError, Http404):
        return None
    # The tenant's plan too: the tenant's API rate limit reads it on every request.
    return _membership_read(user_code=user_code, tenant_code=tenant)


class _MembershipRead:
    """What `Membership.objects.select_related("user", "tenant__plan").filter(
    user__code=..., tenant__code=...).first()` answers, with its SQL built once.

    Every API request reads its caller's membership, and Django compiles a
    select_related query anew each time: that took longer than the query itself
    (issue 17: 0.5 ms of 1.4 ms, a third of a device-state request). The same
    columns are read here from SQL made once per process from the models, converted
    by the fields' and the backend's own converters, and put together as
    select_related would (tenants/tests/test_auth.py holds the two equal). The
    membership is still read on every request: only the compiling is saved."""

    def __init__(self, connection):
        from billing.models import Plan

        quote = connection.ops.quote_name
        # (model, alias, its fields in the order select_related reads them)
        self.parts = [
            (model, alias, model._meta.concrete_fields)
            for model, alias in (
                (Membership, "m"),
                (User, "u"),
                (Tenant, "t"),
                (Plan, "p"),
            )
        ]
        columns = []
        self.converters = []
        for _, alias, fields in self.parts:
            for field in fields:
                columns.append(f"{alias}.{quote(field.column)}")
                # As Django's compiler: the backend's converters, then the field's.
                col = field.get_col(alias)
                converters = connection.ops.get_db_converters(col)
                converters += field.get_db_converters(connection)
                if converters:
                    self.converters.append((len(columns) - 1, converters, col))

        def join(kind, alias, model, on):
            # `on`: the column of an earlier alias that holds this model's key
            return (
                f" {kind} JOIN {quote(model._meta.db_table)} {alias} ON {on} = "
                f"{alias}.{quote(model._meta.pk.column)}"
            )

        def col(alias, model, name):
            return f"{alias}.{quote(model._meta.get_field(name).column)}"

        # Identifiers from the models' metadata, quoted; the values are parameters.
        self.sql = (
            f"SELECT {', '.join(columns)} FROM {quote(Membership._meta.db_table)} m"  # noqa: S608
            + join("INNER", "u", User, col("m", Membership, "user"))
            + join("INNER", "t", Tenant, col("m", Membership, "tenant"))
            + join("LEFT OUTER", "p", Plan, col("t", Tenant, "plan"))
            + f" WHERE {col('u', User, 'code')} = %s"
            + f" AND {col('t', Tenant, 'code')} = %s"
            + f" ORDER BY {col('m', Membership, 'id')} LIMIT 1"
        )

    def __call__(self, connection, *, user_code, tenant_code) -> Membership | None:
        user_field = User._meta.get_field("code")
        tenant_field = Tenant._meta.get_field("code")
        params = [
            user_field.get_db_prep_value(user_code, connection),
            tenant_field.get_db_prep_value(tenant_code, connection),
        ]
        with connection.cursor() as cursor:
            cursor.execute(self.sql, params)
            row = cursor.fetchone()
        if row is None:
            return None
        values = list(row)
        for index, converters, col in self.converters:
            for convert in converters:
                values[index] = convert(values[index], col, connection)
        instances = []
        start = 0
        for model, _, fields in self.parts:
            part = values[start : start + len(fields)]
            start += len(fields)
            # A LEFT JOIN without a row (a tenant without a plan): no instance.
            present = part[fields.index(model._meta.pk)] is not None
            names = [field.attname for field in fields]
            instances.append(
                model.from_db(connection.alias, names, part) if present else None
            )
        membership, user, tenant, plan = instances
        Membership._meta.get_field("user").set_cached_value(membership, user)
        Membership._meta.get_field("tenant").set_cached_value(membership, tenant)
        Tenant._meta.get_field("plan").set_cached_value(tenant, plan)
        return membership


_membership_reads: dict[str, _MembershipRead] = {}


def _membership_read(*, user_code: uuid.UUID, tenant_code: uuid.UUID):
    from django.db import connections, router

    connection = connections[router.db_for_read(Membership)]
    read = _membership_reads.get(connection.vendor)
    if read is None:
        read = _membership_reads[connection.vendor] = _MembershipRead(connection)
    return read(connection, user_code=user_code, tenant_code=tenant_code)


def _caller_from_token(token: Token, *, how: How, tenant_code, check: bool) -> Caller:
    membership = _token_membership(token, tenant_code)
    if membership is not None:
        user = membership.user
        if not user.is_active:
            raise NotAuthenticated("This account is disabled.", code="user_inactive")
        _token_login_check(user=user, token=token)
        return _caller(user, membership, how=how, token=token, check=check)
    user = token_user(token)
    if user is None:
        raise NotAuthenticated("No account for this token.", code="user_not_found")
    if not user.is_active:
        raise NotAuthenticated("This account is disabled.", code="user_inactive")
    _token_login_check(user=user, token=token)
    claimed = token.get(TENANT_CLAIM)
    if claimed:
        if tenant_code is not None and _hex(tenant_code) != _hex(claimed):
            raise NotAMember("This token is for another tenant.")
        membership = membership_for_user(user=user, tenant_code=claimed)
    elif tenant_code is not None:
        membership = membership_for_user(user=user, tenant_code=tenant_code)
    else:
        memberships = list(memberships_for_user(user=user)[:2])
        if len(memberships) != 1:
            raise NotAuthenticated(
                "This token names no tenant and you are in several (or none).",
                code="token_no_tenant",
            )
        membership = memberships[0]
    return _caller(user, membership, how=how, token=token, check=check)


def _caller(user: User, membership: Membership, *, how: How, token, check) -> Caller:
    caller = Caller(
        user=user,
        membership=membership,
        how=how,
        second_factor=bool(token.get(OTP_CLAIM)),
        token=token,
    )
    if check:
        caller_check(caller)
    return caller


def _token_login_check(*, user: User, token: Token) -> None:
    """NotAuthenticated when the token's login has been ended since: the password
    changed, or the user logged out their other sessions."""
    if token.get(jwt_settings.REVOKE_TOKEN_CLAIM) != get_md5_hash_password(
        user.password
    ):
        raise NotAuthenticated(
            "Your password was changed: log in again.", code="password_changed"
        )
    if token.get(EPOCH_CLAIM, 0) != user.token_epoch:
        raise NotAuthenticated(
            "This login was ended (logged out from another session): log in again.",
            code="session_ended",
        )


def _hex(code) -> str | None:
    try:
        return parse_code(code).hex
    except Http404:
        return None
