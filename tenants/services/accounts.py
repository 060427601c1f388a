"""Logins, passwords, browser sessions and API tokens.

What ends access, all in one place: a password change or reset ends every other
browser session, every API refresh token and every live socket of the user; "log out
other sessions" does the same without a new password. Sockets learn it through the
user's channel group ("access.changed") and re-check their session or token.
"""

from importlib import import_module

from django.conf import settings
from django.db import transaction
from django.db.models import F
from django.utils import timezone
from rest_framework_simplejwt.settings import api_settings as jwt_settings
from rest_framework_simplejwt.token_blacklist.models import (
    BlacklistedToken,
    OutstandingToken,
)
from rest_framework_simplejwt.tokens import RefreshToken

from audit.services import audit_record
from poolsaas.live import messages
from poolsaas.live.groups import broadcast, user_group
from tenants.models import Tenant, User, UserSession

# Inside each logged-in session: the code of its UserSession row (the session key
# changes on login, tenant switch and password change; this does not).
SESSION_CODE_KEY = "poolsaas_session"
_SEEN_KEY = "poolsaas_seen"
# The session key the row was last given (it changes under the row's feet).
_ROW_KEY = "poolsaas_key"
# "Last seen" is written at most this often per session, not on every request.
SEEN_EVERY_SECONDS = 300


def access_changed(user: User) -> None:
    """Open WebSockets of this user re-check their access and close if it is gone."""
    broadcast(user_group(user.code), messages.access_changed())


def auth_login_succeeded(
    *, user: User, tenant: Tenant | None, second_factor: str = ""
) -> None:
    data = {"second_factor": second_factor} if second_factor else None
    audit_record(action="login.succeeded", tenant=tenant, actor=user, data=data)


def auth_login_failed(*, email: str, reason: str = "bad credentials") -> None:
    # Failed logins go to the platform chain: the e-mail may belong to nobody.
    audit_record(
        action="login.failed", actor_label=email[:254], data={"reason": reason}
    )


def auth_logged_out(*, user: User, tenant: Tenant | None) -> None:
    """Record a logout (after the session ended) and let the user's live sockets
    re-check theirs, so the ones of this session close."""
    audit_record(action="logout", tenant=tenant, actor=user)
    access_changed(user)


def _session_store():
    return import_module(settings.SESSION_ENGINE).SessionStore


def _end_sessions(user: User, *, keep: str | None) -> int:
    """End the user's tracked browser sessions except the one whose code is `keep`.

    Sessions never tracked (opened before tracking existed) end through Django's own
    check of the password hash after a password change.
    """
    rows = UserSession.objects.filter(user=user, ended_at__isnull=True)
    if keep:
        rows = rows.exclude(code=keep)
    rows = list(rows)
    store = _session_store()()
    for row in rows:
        store.delete(row.session_key)
    UserSession.objects.filter(pk__in=[r.pk for r in rows]).update(
        ended_at=timezone.now()
    )
    return len(rows)


def _blacklist_refresh_tokens(user: User) -> int:
    pending = OutstandingToken.objects.filter(
        user=user, expires_at__gt=timezone.now(), blacklistedtoken__isnull=True
    )
    created = BlacklistedToken.objects.bulk_create(
        [BlacklistedToken(token=token) for token in pending], ignore_conflicts=True
    )
    return len(created)


def _end_access(user: User, *, keep: str | None) -> dict:
    """Everything that ends a user's other logins; the counts go to the trail."""
    # Access tokens carry the epoch they were issued under (claim "ep"): bumping it
    # ends the ones already handed out, not only their refresh tokens.
    User.objects.filter(pk=user.pk).update(token_epoch=F("token_epoch") + 1)
    user.refresh_from_db(fields=["token_epoch"])
    ended = {
        "sessions": _end_sessions(user, keep=keep),
        "refresh_tokens": _blacklist_refresh_tokens(user),
    }
    access_changed(user)
    return ended


def auth_password_changed(
    *, user: User, actor: User | None, keep_session: str | None, how: str
) -> None:
    """After a new password was saved (page, reset link, admin): end every other
    session, API token and socket of the user.

    `keep_session` is the SESSION_CODE_KEY of the session that made the change (it
    stays logged in, as Django's update_session_auth_hash keeps it), or None.
    """
    with transaction.atomic():
        ended = _end_access(user, keep=keep_session)
        audit_record(
            action="password.reset" if how == "reset" else "password.changed",
            actor=actor or user,
            target=user,
            data={"how": how, **ended},
        )


def auth_password_reset(*, user: User) -> None:
    """A password set through the e-mailed reset link: nothing of the old one
    survives (the reset page logs nobody in)."""
    auth_password_changed(user=user, actor=user, keep_session=None, how="reset")


def user_sessions_end_others(*, user: User, keep_session: str | None) -> dict:
    """ "Log out other sessions": every other browser session, every API token and
    every socket of theirs end; this session stays."""
    with transaction.atomic():
        ended = _end_access(user, keep=keep_session)
        audit_record(
            action="sessions.ended_others", actor=user, target=user, data=ended
        )
    return ended


def user_logins_end(*, user: User, actor: User, reason: str) -> dict:
    """End every login of a user (staff deactivated the account, say): sessions,
    API tokens and sockets, none kept."""
    with transaction.atomic():
        ended = _end_access(user, keep=None)
        audit_record(
            action="user.logins_ended",
            actor=actor,
            target=user,
            data={"reason": reason, **ended},
        )
    return ended


def user_session_end(*, user: User, code) -> UserSession:
    """Log out one other session of the user (Http404 when not theirs)."""
    from tenants.selectors import user_session_get_for_user

    with transaction.atomic():
        row = user_session_get_for_user(user=user, code=code)
        _session_store()().delete(row.session_key)
        row.ended_at = timezone.now()
        row.save(update_fields=["ended_at"])
        audit_record(
            action="session.ended",
            actor=user,
            target=row,
            data={"ip": row.ip, "user_agent": row.user_agent[:120]},
        )
        access_changed(user)
    return row


def user_session_start(*, request, user: User) -> None:
    """A browser session just logged this user in (django.contrib.auth.login): its
    row on the "where you're logged in" list."""
    session = request.session
    if session.session_key is None:
        session.save()
    row = UserSession.objects.create(
        user=user,
        session_key=session.session_key,
        ip=request.META.get("REMOTE_ADDR") or None,
        user_agent=request.META.get("HTTP_USER_AGENT", "")[:400],
    )
    session[SESSION_CODE_KEY] = row.code.hex
    session[_ROW_KEY] = session.session_key
    session[_SEEN_KEY] = timezone.now().timestamp()


def user_session_touch(*, request) -> None:
    """Keep the UserSession row of a logged-in request in step with its session:
    follow the session key when it changed (tenant switch, password change), write
    "last seen" every SEEN_EVERY_SECONDS, and make the row of a session from before
    the list existed."""
    session = request.session
    code = session.get(SESSION_CODE_KEY)
    if code is None:
        user_session_start(request=request, user=request.user)
        return
    now = timezone.now()
    stale = now.timestamp() - session.get(_SEEN_KEY, 0) >= SEEN_EVERY_SECONDS
    if session.session_key != session.get(_ROW_KEY) or stale:
        UserSession.objects.filter(code=code, user=request.user).update(
            session_key=session.session_key,
            last_seen_at=now,
            ip=request.META.get("REMOTE_ADDR") or None,
            user_agent=request.headers.get("User-Agent", "")[:400],
        )
        session[_ROW_KEY] = session.session_key
        session[_SEEN_KEY] = now.timestamp()


class TokenRefused(Exception):
    """A refresh token that was already used (or never issued by us)."""


def auth_token_refresh(*, refresh: RefreshToken, user: User) -> RefreshToken:
    """Rotate a refresh token: exactly one caller wins, however many race.

    The token's outstanding row is locked and its blacklisting written under the
    lock, so a second request with the same token waits, then sees it used. The new
    token keeps the old expiry: a login lasts REFRESH_TOKEN_LIFETIME in all, however
    often it is refreshed. A reused token is recorded (a copy may have been stolen).
    """
    jti = refresh[jwt_settings.JTI_CLAIM]
    with transaction.atomic():
        outstanding = OutstandingToken.objects.select_for_update(of=("self",)).filter(
            jti=jti
        )
        outstanding = outstanding.first()
        used = outstanding is None or (
            BlacklistedToken.objects.filter(token=outstanding).exists()
        )
        if not used:
            BlacklistedToken.objects.create(token=outstanding)
            refresh.set_jti()
            refresh.set_iat()
            # No set_exp(): rotation must not extend the login.
            refresh.outstand()
    if used:
        audit_record(
            action="token.reuse_refused",
            actor=user,
            target=user,
            data={"jti": str(jti)[:64]},
        )
        raise TokenRefused("This refresh token was already used: log in again.")
    return refresh
