"""tenants.auth, called directly: every way a caller is resolved, and every reason one
is refused, for a browser session, an access token and an MQTT CONNECT password.

A "login" below is made the way the real entry makes it (a saved session, the tokens
/api/login hands out); `resolve()` then asks tenants.auth again, as the next request
or socket would, so what changed in between counts.
"""

import os
import re
from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace

import pytest
from django.conf import settings
from django.contrib.auth import get_user
from django.db.models import F
from django.test import Client
from django_otp import DEVICE_ID_SESSION_KEY

from poolsaas.api.testing import api_client, tokens_for
from tenants import auth
from tenants.auth import SESSION_KEY, TENANT_CLAIM
from tenants.models import Membership, User

pytestmark = pytest.mark.django_db

ENTRIES = ["session", "jwt", "mqtt"]


class Login:
    """One login of a membership through `entry`; resolve() reads it again."""

    def __init__(self, entry, membership, *, second_factor=False, token=None):
        self.entry = entry
        self.membership = membership
        if entry == "session":
            client = Client()
            client.force_login(membership.user)
            session = client.session
            session[SESSION_KEY] = membership.tenant.code.hex
            if second_factor:
                # What django-otp's login() stores once a code was checked.
                session[DEVICE_ID_SESSION_KEY] = "tenants.totpdevice/1"
            session.save()
            self.key = session.session_key
        else:
            self.token = token or str(
                tokens_for(membership, second_factor=second_factor).access_token
            )

    def resolve(self, *, tenant_code=None):
        if self.entry == "session":
            from importlib import import_module

            store = import_module(settings.SESSION_ENGINE).SessionStore(self.key)
            # The user as Django's authentication resolves it for a request or a
            # socket (it checks the session's password hash).
            user = get_user(SimpleNamespace(session=store))
            return auth.caller_from_session(
                user=user, session=store, tenant_code=tenant_code
            )
        if self.entry == "jwt":
            return auth.caller_from_access_token(self.token, tenant_code=tenant_code)
        assert tenant_code is None, "an MQTT CONNECT names no tenant"
        return auth.caller_from_mqtt_password(self.token, client_id="dash-1")


def token_naming(membership, tenant) -> str:
    """An access token of this membership's user that names another tenant."""
    access = tokens_for(membership).access_token
    access[TENANT_CLAIM] = tenant.code.hex
    return str(access)


# --- the happy path -------------------------------------------------------------------


@pytest.mark.parametrize("entry", ENTRIES)
def test_a_login_resolves_to_its_user_and_membership(entry, olivia, carol):
    caller = Login(entry, olivia).resolve()
    assert caller.how == entry
    assert caller.user == olivia.user
    assert caller.membership == olivia
    assert caller.tenant == olivia.tenant
    assert caller.second_factor is False
    if entry == "session":
        assert caller.session_key and caller.token is None
        assert caller.expires_at is None
        assert caller.memberships == (olivia,)
    else:
        assert caller.token is not None and caller.expires_at is not None
    assert caller.client_id == ("dash-1" if entry == "mqtt" else None)


def test_a_session_works_in_its_chosen_tenant_else_the_first(alice, carol):
    also_b = Membership.objects.create(
        tenant=carol.tenant, user=alice.user, role="viewer"
    )
    login = Login("session", also_b)
    assert login.resolve().membership == also_b
    # The tenant it chose is gone: the first by name, as the pages do.
    also_b.delete()
    assert login.resolve().membership == alice


def test_a_token_without_tenant_uses_the_only_membership(olivia, carol):
    from rest_framework_simplejwt.tokens import AccessToken

    bare = AccessToken.for_user(olivia.user)
    bare["ep"] = olivia.user.token_epoch
    assert auth.caller_from_access_token(str(bare)).membership == olivia
    assert (
        auth.caller_from_access_token(
            str(bare), tenant_code=olivia.tenant.code
        ).membership
        == olivia
    )
    Membership.objects.create(tenant=carol.tenant, user=olivia.user, role="viewer")
    with pytest.raises(auth.NotAuthenticated) as refused:
        auth.caller_from_access_token(str(bare))
    assert refused.value.code == "token_no_tenant"
    # The API answers it in its own shape.
    client = api_client(token=str(bare))
    assert client.get("/api/v1/pools/").json()["error"]["code"] == "token_no_tenant"


# --- refusals -------------------------------------------------------------------------


@pytest.mark.parametrize("entry", ENTRIES)
def test_a_bad_credential_is_not_authenticated(entry, olivia):
    login = Login(entry, olivia)
    if entry == "session":
        login.key = "made-up-session-key"
    else:
        login.token = login.token[:-4] + "AAAA"  # the signature no longer matches
    with pytest.raises(auth.NotAuthenticated) as refused:
        login.resolve()
    if entry != "session":
        assert refused.value.code == "token_not_valid"


@pytest.mark.parametrize("entry", ENTRIES)
def test_an_expired_login_is_not_authenticated(entry, olivia):
    from django.contrib.sessions.models import Session
    from django.utils import timezone

    if entry == "session":
        login = Login(entry, olivia)
        Session.objects.filter(session_key=login.key).update(
            expire_date=timezone.now() - timedelta(seconds=1)
        )
    elif entry == "jwt":
        access = tokens_for(olivia).access_token
        access.set_exp(lifetime=timedelta(seconds=-1))
        login = Login(entry, olivia, token=str(access))
    else:
        # The gateway's password lives as long as its login: expired means the
        # login made longer ago than a refresh token lives.
        access = tokens_for(olivia).access_token
        lifetime = settings.SIMPLE_JWT["REFRESH_TOKEN_LIFETIME"]
        access.set_exp(lifetime=timedelta(seconds=-1))
        access[auth.AUTH_TIME_CLAIM] -= int(lifetime.total_seconds()) + 1
        login = Login(entry, olivia, token=str(access))
    with pytest.raises(auth.NotAuthenticated) as refused:
        login.resolve()
    if entry != "session":
        assert refused.value.code == "token_not_valid"


# --- the gateway's password: the login's lifetime, not the access token's ---------


def test_an_expired_access_token_opens_the_gateway_while_its_login_lives(olivia):
    refresh = tokens_for(olivia)
    access = refresh.access_token
    access.set_exp(lifetime=timedelta(hours=-12))
    caller = auth.caller_from_mqtt_password(str(access), client_id="dash-1")
    assert caller.membership == olivia
    # Not for the API or the JSON socket: there it is expired.
    with pytest.raises(auth.NotAuthenticated):
        auth.caller_from_access_token(str(access))
    # Refreshing (rotation) keeps the login, hence the gateway password.
    from tenants.services import auth_token_refresh

    auth_token_refresh(refresh=refresh, user=olivia.user)
    assert auth.caller_from_mqtt_password(str(access)).membership == olivia


def test_logging_out_ends_the_gateway_password_at_once(olivia):
    refresh = tokens_for(olivia)
    access = str(refresh.access_token)  # not even expired yet
    before = auth.caller_from_mqtt_password(access)
    refresh.blacklist()  # what POST /api/logout does
    with pytest.raises(auth.NotAuthenticated) as refused:
        auth.caller_from_mqtt_password(access)
    assert refused.value.code == "session_ended"
    # An open socket is refused on its next re-check.
    with pytest.raises(auth.NotAuthenticated):
        auth.caller_still_valid(before)


def test_another_login_does_not_keep_a_logged_out_one_alive(olivia):
    first, second = tokens_for(olivia), tokens_for(olivia)
    first.blacklist()
    with pytest.raises(auth.NotAuthenticated):
        auth.caller_from_mqtt_password(str(first.access_token))
    assert auth.caller_from_mqtt_password(str(second.access_token))


def test_a_token_without_login_id_opens_the_gateway_only_until_it_expires(olivia):
    access = tokens_for(olivia).access_token
    del access.payload[auth.LOGIN_ID_CLAIM]
    assert auth.caller_from_mqtt_password(str(access))
    access.set_exp(lifetime=timedelta(seconds=-1))
    with pytest.raises(auth.NotAuthenticated):
        auth.caller_from_mqtt_password(str(access))


def test_a_forged_signature_is_refused_even_within_the_leeway(olivia):
    access = tokens_for(olivia).access_token
    access.set_exp(lifetime=timedelta(hours=-1))
    with pytest.raises(auth.NotAuthenticated) as refused:
        auth.caller_from_mqtt_password(str(access)[:-4] + "AAAA")
    assert refused.value.code == "token_not_valid"


@pytest.mark.parametrize("entry", ENTRIES)
def test_a_changed_password_ends_the_login(entry, olivia):
    login = Login(entry, olivia)
    before = login.resolve()
    olivia.user.set_password("another-horse-battery")
    olivia.user.save()
    with pytest.raises(auth.NotAuthenticated) as refused:
        login.resolve()
    if entry != "session":
        assert refused.value.code == "password_changed"
    # What was resolved before (an open socket) is refused on its next re-check.
    with pytest.raises(auth.NotAuthenticated):
        auth.caller_still_valid(before)


@pytest.mark.parametrize("entry", ["jwt", "mqtt"])
def test_logging_out_other_sessions_ends_a_token(entry, olivia):
    login = Login(entry, olivia)
    before = login.resolve()
    User.objects.filter(pk=olivia.user.pk).update(token_epoch=F("token_epoch") + 1)
    with pytest.raises(auth.NotAuthenticated) as refused:
        login.resolve()
    assert refused.value.code == "session_ended"
    with pytest.raises(auth.NotAuthenticated):
        auth.caller_still_valid(before)


def test_a_logged_out_session_is_no_longer_current(olivia):
    from django.contrib.sessions.models import Session

    login = Login("session", olivia)
    before = login.resolve()
    assert auth.caller_still_valid(before).membership == olivia
    Session.objects.filter(session_key=login.key).delete()
    with pytest.raises(auth.NotAuthenticated) as refused:
        auth.caller_still_valid(before)
    assert refused.value.code == "session_ended"


@pytest.mark.parametrize("entry", ENTRIES)
def test_a_disabled_account_is_refused(entry, olivia):
    login = Login(entry, olivia)
    before = login.resolve()
    User.objects.filter(pk=olivia.user.pk).update(is_active=False)
    with pytest.raises(auth.NotAuthenticated):
        login.resolve()
    with pytest.raises(auth.NotAuthenticated):
        auth.caller_still_valid(before)


@pytest.mark.parametrize("entry", ENTRIES)
def test_a_removed_member_is_not_a_member(entry, olivia):
    login = Login(entry, olivia)
    before = login.resolve()
    Membership.objects.filter(pk=olivia.pk).delete()
    with pytest.raises(auth.NotAMember) as refused:
        login.resolve()
    # "Not a member" reads as "not found", as a foreign object does.
    from django.http import Http404

    assert isinstance(refused.value, Http404)
    with pytest.raises(auth.NotAMember):
        auth.caller_still_valid(before)


@pytest.mark.parametrize("entry", ENTRIES)
def test_a_suspended_tenant_is_refused(entry, olivia):
    login = Login(entry, olivia)
    olivia.tenant.status = "suspended"
    olivia.tenant.save()
    with pytest.raises(auth.TenantSuspended) as refused:
        login.resolve()
    assert "Acme Pools is suspended" in str(refused.value)


def test_unchecked_resolution_still_returns_the_suspended_membership(olivia):
    # The pages show such a member the tenant's notice, so they need the membership.
    olivia.tenant.status = "suspended"
    olivia.tenant.save()
    token = str(tokens_for(olivia).access_token)
    caller = auth.caller_from_access_token(token, check=False)
    assert caller.membership == olivia
    with pytest.raises(auth.TenantSuspended):
        auth.caller_check(caller)


@pytest.mark.parametrize("entry", ENTRIES)
def test_a_required_second_factor_is_refused_without_one(entry, alice, olivia):
    alice.tenant.require_two_factor = True
    alice.tenant.save()
    with pytest.raises(auth.TwoFactorRequired) as refused:
        Login(entry, alice).resolve()
    assert refused.value.code == "two_factor_required"
    with_code = Login(entry, alice, second_factor=True).resolve()
    assert with_code.second_factor is True
    # An operator is not asked for one.
    assert Login(entry, olivia).resolve().membership == olivia


@pytest.mark.parametrize("entry", ENTRIES)
def test_another_tenants_code_is_not_a_member(entry, olivia, carol):
    if entry == "mqtt":
        # The CONNECT names no tenant: only the token does.
        login = Login(entry, olivia, token=token_naming(olivia, carol.tenant))
        with pytest.raises(auth.NotAMember):
            login.resolve()
        return
    login = Login(entry, olivia)
    for code in (carol.tenant.code, carol.tenant.code.hex, "not-a-code"):
        with pytest.raises(auth.NotAMember):
            login.resolve(tenant_code=code)
    if entry == "jwt":
        # A token is bound to its tenant, even for a user who is in both.
        Membership.objects.create(tenant=carol.tenant, user=olivia.user, role="viewer")
        with pytest.raises(auth.NotAMember):
            login.resolve(tenant_code=carol.tenant.code)


def test_still_valid_reads_the_role_again(olivia):
    before = Login("jwt", olivia).resolve()
    Membership.objects.filter(pk=olivia.pk).update(role="viewer")
    after = auth.caller_still_valid(before)
    assert after.membership.role == "viewer" and before.membership.role == "operator"
    assert after.token is before.token


def test_bearer_token():
    assert auth.bearer_token("Bearer abc.def") == "abc.def"
    assert auth.bearer_token(b"bearer  abc ") == "abc"
    for header in (None, "", "Bearer", "Bearer  ", "Basic abc", "Token abc"):
        assert auth.bearer_token(header) is None


# --- the rule stays true --------------------------------------------------------------

ROOT = Path(__file__).resolve().parents[2]
# Reading, decoding or minting a simplejwt token, or authenticating with its classes.
TOKEN_USE = re.compile(
    r"\b(AccessToken|RefreshToken|UntypedToken|SlidingToken|TokenBackend)\s*[(.]"
    r"|\bclass\s+\w+\(\s*(AccessToken|RefreshToken|Token|JWTAuthentication)\s*\)"
    r"|\bget_validated_token\b|\bJWTAuthentication\b|\bjwt\.decode\b"
    r"|^\s*(import jwt|from jwt\b)",
    re.MULTILINE,
)
# Looking a user's membership up (to know who is calling).
MEMBERSHIP_LOOKUP = re.compile(
    r"\bdef (membership_for_user|memberships_for_user|session_is_current)\b"
    r"|\.memberships\.(all|filter|get|first|select_related|order_by)\("
    r"|Membership\.objects\.(filter|get|first)\(\s*user\s*="
)


SKIPPED_DIRS = {
    ".git",
    ".venv",
    "node_modules",
    "tests",
    "migrations",
    "bench",
    "firmware",
}


def _server_modules():
    """(path, text) of every server module: no tests, migrations, tools, firmware."""
    for folder, dirs, files in os.walk(ROOT):
        dirs[:] = sorted(d for d in dirs if d not in SKIPPED_DIRS)
        for name in sorted(files):
            rel = (Path(folder) / name).relative_to(ROOT).as_posix()
            if name.endswith(".py") and rel not in {
                "conftest.py",
                "poolsaas/api/testing.py",
            }:
                yield rel, (ROOT / rel).read_text()


def test_only_tenants_auth_reads_tokens_and_resolves_memberships():
    tokens = [rel for rel, text in _server_modules() if TOKEN_USE.search(text)]
    lookups = [rel for rel, text in _server_modules() if MEMBERSHIP_LOOKUP.search(text)]
    assert tokens == ["tenants/auth.py"]
    assert lookups == ["tenants/auth.py"]


def test_the_rule_catches_what_it_is_for():
    for text in (
        "validated = AccessToken(raw)",
        "RefreshToken.for_user(user)",
        "class Mine(JWTAuthentication):",
        "auth.get_validated_token(raw)",
        "import jwt",
    ):
        assert TOKEN_USE.search(text), text
    assert not TOKEN_USE.search("def f(refresh: RefreshToken) -> None:")
    assert not TOKEN_USE.search("access = refresh.access_token")
    for text in (
        "membership = user.memberships.first()",
        "Membership.objects.filter(user=user)",
        "def membership_for_user(*, user):",
    ):
        assert MEMBERSHIP_LOOKUP.search(text), text


def _as_select_related(membership):
    """Every column of the membership and of what select_related put beside it."""
    if membership is None:
        return None

    def columns(obj):
        if obj is None:
            return None
        return {f.attname: getattr(obj, f.attname) for f in obj._meta.concrete_fields}

    tenant = membership.tenant
    return {
        "membership": columns(membership),
        "user": columns(membership.user),
        "tenant": columns(tenant),
        "plan": columns(tenant.plan),
    }


@pytest.mark.parametrize("with_plan", [True, False])
def test_the_token_membership_read_equals_select_related(
    alice, carol, with_plan, django_assert_num_queries
):
    """The API's every request reads its caller through auth._membership_read, SQL
    made once from the models; it answers what the ORM query it replaces answers,
    for a tenant with a plan and without, and nothing for another tenant's code."""
    from billing.models import Plan

    alice.tenant.plan = Plan.objects.order_by("pk").first() if with_plan else None
    alice.tenant.save(update_fields=["plan"])
    assert (alice.tenant.plan is not None) == with_plan

    def orm(user, tenant):
        return (
            Membership.objects.select_related("user", "tenant__plan")
            .filter(user__code=user.code, tenant__code=tenant.code)
            .first()
        )

    with django_assert_num_queries(1):
        read = auth._membership_read(
            user_code=alice.user.code, tenant_code=alice.tenant.code
        )
        # Its relations come with it: no query for the user, tenant or plan.
        assert read.tenant.plan == alice.tenant.plan
        assert read.user.password == alice.user.password
    assert _as_select_related(read) == _as_select_related(orm(alice.user, alice.tenant))
    assert read == alice
    # Another tenant's code, or a user of another tenant: no membership.
    foreign = auth._membership_read(
        user_code=alice.user.code, tenant_code=carol.tenant.code
    )
    assert foreign is None and orm(alice.user, carol.tenant) is None
    assert (
        auth._membership_read(user_code=carol.user.code, tenant_code=alice.tenant.code)
        is None
    )
