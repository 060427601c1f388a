import time

from django.conf import settings
from django.contrib import messages
from django.contrib.auth import login as auth_login
from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_required
from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import ValidationError
from django.http import Http404, HttpResponseRedirect
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_POST
from django_otp import login as otp_login

from tenants import services
from tenants.auth import SESSION_KEY, membership_for_user, memberships_for_user
from tenants.forms import (
    EmailAuthenticationForm,
    InvitationForm,
    InvitationSignupForm,
    RoleChangeForm,
    TwoFactorCodeForm,
)
from tenants.models import Membership, User
from tenants.roles import Action, Role, role_allows
from tenants.selectors import (
    invitation_get_for_user,
    invitations_pending,
    member_get_for_user,
    membership_require,
    parse_code,
    tenant_members,
    two_factor_device,
    two_factor_enabled,
    user_exists,
)

# The login half-done by a password, waiting for the second factor (anonymous
# session). It lapses after TWO_FACTOR_PENDING_SECONDS.
TWO_FACTOR_PENDING_KEY = "poolsaas_2fa_pending"
TWO_FACTOR_PENDING_SECONDS = 300


def _after_login(request, user, *, second_factor: str = "") -> None:
    """Pick the session's tenant (the first by name) and record the login."""
    membership = memberships_for_user(user=user).first()
    if membership is not None:
        request.session[SESSION_KEY] = membership.tenant.code.hex
    services.auth_login_succeeded(
        user=user,
        tenant=membership.tenant if membership else None,
        second_factor=second_factor,
    )


class LoginView(auth_views.LoginView):
    """E-mail and password; then, for a user with two-factor, the code
    (login_two_factor), before anything is logged in."""

    form_class = EmailAuthenticationForm
    redirect_authenticated_user = True

    def form_valid(self, form):
        user = form.get_user()
        next_url = self.get_success_url()
        if two_factor_enabled(user=user):
            self.request.session[TWO_FACTOR_PENDING_KEY] = {
                "user": user.code.hex,
                "backend": user.backend,
                "next": next_url,
                "at": time.time(),
            }
            return redirect("login_two_factor")
        auth_login(self.request, user)
        _after_login(self.request, user)
        return HttpResponseRedirect(next_url)

    def form_invalid(self, form):
        # Once django-axes has locked the pair out, login_locked_out records the
        # attempt (reason "locked out"); recording it here too would count it twice.
        if not getattr(self.request, "axes_locked_out", False):
            services.auth_login_failed(email=_typed_email(self.request))
        return super().form_invalid(form)


def _pending_two_factor(request):
    pending = request.session.get(TWO_FACTOR_PENDING_KEY)
    if not isinstance(pending, dict):
        return None, None
    if time.time() - pending.get("at", 0) > TWO_FACTOR_PENDING_SECONDS:
        request.session.pop(TWO_FACTOR_PENDING_KEY, None)
        return None, None
    user = User.objects.filter(code=parse_code(pending["user"]), is_active=True).first()
    return user, pending


def login_two_factor(request):
    """The second step of a login: the code of the authenticator app, or a
    recovery code. Wrong codes are throttled per user (TotpDevice)."""
    user, pending = _pending_two_factor(request)
    if user is None:
        messages.info(request, "Log in again: the code step timed out.")
        return redirect("login")
    form = TwoFactorCodeForm(request.POST if request.method == "POST" else None)
    status = 200
    if request.method == "POST" and form.is_valid():
        try:
            method = services.two_factor_verify(
                user=user, code=form.cleaned_data["code"]
            )
        except services.TwoFactorInvalid as error:
            form.add_error("code", str(error))
            status = 429 if error.wait else 400
        else:
            request.session.pop(TWO_FACTOR_PENDING_KEY, None)
            auth_login(request, user, backend=pending["backend"])
            otp_login(request, two_factor_device(user=user))
            _after_login(request, user, second_factor=method)
            if method == "recovery_code":
                messages.warning(
                    request,
                    "You used a recovery code; it will not work again. Make new "
                    "ones on your Account page if few are left.",
                )
            return HttpResponseRedirect(pending["next"])
    elif request.method == "POST":
        status = 400
    return render(
        request, "registration/login_two_factor.html", {"form": form}, status=status
    )


def _normalise_email(value):
    # Login is case-insensitive (User.objects.get_by_natural_key), so lockouts and
    # the trail must be too: ALICE@ and alice@ are one account to guess.
    return value.strip().lower() if isinstance(value, str) else value


def _typed_email(request) -> str:
    return _normalise_email(request.POST.get("username", "")) or ""


def axes_username(request, credentials=None):
    """AXES_USERNAME_CALLABLE: the e-mail as login matches it, so that case or
    space variants of one address share one failure count."""
    value = (credentials or {}).get(settings.AXES_USERNAME_FORM_FIELD)
    if value is None and request is not None:
        data = getattr(request, "data", None) or getattr(request, "POST", {})
        value = data.get(settings.AXES_USERNAME_FORM_FIELD)
    return _normalise_email(value)


def login_locked_out(request, response=None, credentials=None, *args, **kwargs):
    """django-axes calls this once the failure limit is reached."""
    services.auth_login_failed(email=_typed_email(request), reason="locked out")
    form = EmailAuthenticationForm(request, data=None)
    minutes = int(settings.AXES_COOLOFF_TIME.total_seconds() // 60)
    response = render(
        request,
        "registration/login.html",
        {"form": form, "locked_out": True, "cooloff_minutes": minutes},
        status=429,
    )
    response["Retry-After"] = str(minutes * 60)
    return response


@require_POST
def logout_view(request):
    from django.contrib.auth import logout

    user, tenant = request.user, request.tenant
    # Session first: the service then tells this user's sockets, which re-check it.
    logout(request)
    if user.is_authenticated:
        services.auth_logged_out(user=user, tenant=tenant)
    messages.success(request, "You are logged out.")
    return HttpResponseRedirect(reverse("login"))


@login_required
@require_POST
def tenant_switch(request):
    membership = membership_for_user(
        user=request.user, tenant_code=request.POST.get("tenant")
    )
    # A new session key with the new tenant: a key learnt while working in one
    # tenant does not carry over to the next.
    request.session.cycle_key()
    request.session[SESSION_KEY] = membership.tenant.code.hex
    if membership.tenant.is_active:
        # A suspended tenant's own notice says where the user is; a green "now
        # working in" above it would contradict it.
        messages.success(request, f"You are now working in {membership.tenant.name}.")
    target = request.POST.get("next") or reverse("pools")
    if not url_has_allowed_host_and_scheme(
        target, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        target = reverse("pools")
    return HttpResponseRedirect(target)


class PasswordResetView(auth_views.PasswordResetView):
    @property
    def extra_email_context(self):
        # The link names SITE_URL, never the request's Host header: a forged Host
        # would otherwise send the reset token to someone else's site.
        return {"site_url": settings.SITE_URL.rstrip("/")}


class PasswordResetConfirmView(auth_views.PasswordResetConfirmView):
    def form_valid(self, form):
        response = super().form_valid(form)
        services.auth_password_reset(user=form.user)
        return response


# --- Team -------------------------------------------------------------------------


def _current_membership(request) -> Membership:
    """The member acting in the session's tenant; a user in no tenant has no team."""
    if request.membership is None:
        raise Http404("You are not a member of any tenant.")
    return request.membership


def _render_team(
    request,
    membership: Membership,
    *,
    invite_form: InvitationForm | None = None,
    error: str = "",
    status: int = 200,
):
    can_manage = role_allows(membership.role, Action.MANAGE)
    is_owner = membership.role == Role.OWNER
    choices = services.role_choices_for(membership)
    members = list(tenant_members(membership=membership))
    owners = sum(1 for member in members if member.role == Role.OWNER)
    rows = [
        {
            "member": member,
            "is_me": member.pk == membership.pk,
            # Only owners touch owners (the service says so too; the page just
            # does not offer what would be refused).
            "can_edit": can_manage and (is_owner or member.role != Role.OWNER),
            # The last owner cannot leave or be removed (membership_remove).
            "last_owner": member.role == Role.OWNER and owners == 1,
        }
        for member in members
    ]
    context = {
        "is_owner": is_owner,
        "rows": rows,
        "invitations": invitations_pending(membership=membership) if can_manage else [],
        "invite_form": invite_form or InvitationForm(role_choices=choices),
        "role_choices": choices,
        "team_error": error,
    }
    return render(request, "tenants/team.html", context, status=status)


def _error_text(error: ValidationError) -> str:
    return " ".join(error.messages)


@login_required
def team(request):
    """The tenant's members and pending invitations; managers also edit them."""
    if request.membership is None:
        return render(request, "devices/no_tenant.html")
    return _render_team(request, request.membership)


@login_required
@require_POST
def team_invite(request):
    membership = _current_membership(request)
    membership_require(membership=membership, action=Action.MANAGE)
    form = InvitationForm(
        request.POST, role_choices=services.role_choices_for(membership)
    )
    if not form.is_valid():
        return _render_team(request, membership, invite_form=form, status=400)
    try:
        invitation, _token = services.invitation_create(
            membership=membership,
            email=form.cleaned_data["email"],
            role=form.cleaned_data["role"],
        )
    except ValidationError as error:
        form.add_error(None, error)
        return _render_team(request, membership, invite_form=form, status=400)
    messages.success(request, f"Invitation sent to {invitation.email}.")
    return redirect("team")


@login_required
@require_POST
def member_role(request, code):
    membership = _current_membership(request)
    target = member_get_for_user(membership=membership, code=code, action=Action.MANAGE)
    form = RoleChangeForm(request.POST, role_choices=Role.choices)
    if not form.is_valid():
        return _render_team(
            request,
            membership,
            error="Choose one of the roles: owner, admin, operator or viewer.",
            status=400,
        )
    previous = target.role
    try:
        target = services.membership_role_change(
            membership=membership, target=target, role=form.cleaned_data["role"]
        )
    except ValidationError as error:
        return _render_team(request, membership, error=_error_text(error), status=400)
    role = target.get_role_display().lower()
    if target.role == previous:
        messages.info(request, f"{target.user.email} is already {role}.")
    else:
        messages.success(request, f"{target.user.email} is now {role}.")
    return redirect("team")


@login_required
@require_POST
def member_remove(request, code):
    membership = _current_membership(request)
    # Anyone may leave a team; removing someone else needs the admin role.
    leaving = parse_code(code) == membership.code
    target = member_get_for_user(
        membership=membership,
        code=code,
        action=Action.VIEW if leaving else Action.MANAGE,
    )
    try:
        services.membership_remove(membership=membership, target=target)
    except ValidationError as error:
        return _render_team(request, membership, error=_error_text(error), status=400)
    if leaving:
        request.session.pop(SESSION_KEY, None)
        messages.success(request, f"You left {membership.tenant.name}.")
        return redirect("pools")
    messages.success(request, f"{target.user.email} was removed from the team.")
    return redirect("team")


@login_required
@require_POST
def invitation_revoke(request, code):
    membership = _current_membership(request)
    invitation = invitation_get_for_user(membership=membership, code=code)
    services.invitation_revoke(membership=membership, invitation=invitation)
    messages.success(request, f"The invitation of {invitation.email} was withdrawn.")
    return redirect("team")


_INVALID_STATUS = {
    "unknown": 404,
    "wrong_user": 403,
    "login_required": 200,
    "suspended": 403,
    "plan_limit": 403,
}


def _invitation_problem(request, error: services.InvitationInvalid):
    response = render(
        request,
        "tenants/invitation_invalid.html",
        {"message": str(error), "kind": error.kind},
        status=_INVALID_STATUS.get(error.kind, 410),
    )
    response["Referrer-Policy"] = "same-origin"
    return response


def invitation_accept(request, token):
    """The link of an invitation e-mail: join the tenant (creating the account when
    the invitee has none), then work in that tenant."""
    user = request.user if request.user.is_authenticated else None
    try:
        invitation = services.invitation_lookup(token=token)
        if user is not None and user.email.lower() != invitation.email.lower():
            raise services.InvitationInvalid(
                f"This invitation is for {invitation.email}; you are logged in as "
                f"{user.email}. Log out, then open the link again.",
                kind="wrong_user",
            )
    except services.InvitationInvalid as error:
        return _invitation_problem(request, error)
    if user is None and user_exists(email=invitation.email):
        # An existing account logs in first and comes straight back here.
        messages.info(
            request,
            f"{invitation.email} already has a poolsaas account: log in to join "
            f"{invitation.tenant.name}.",
        )
        response = redirect_to_login(request.path, login_url=reverse("login"))
        # The token travels in ?next=: never in a Referer to another site.
        response["Referrer-Policy"] = "same-origin"
        return response

    form = None
    if user is None:
        form = InvitationSignupForm(
            request.POST if request.method == "POST" else None, email=invitation.email
        )
    status = 200
    if request.method == "POST":
        if form is None or form.is_valid():
            try:
                membership = services.invitation_accept(
                    token=token,
                    user=user,
                    full_name=form.cleaned_data["full_name"] if form else "",
                    password=form.cleaned_data["password1"] if form else "",
                )
            except services.InvitationInvalid as error:
                return _invitation_problem(request, error)
            except ValidationError as error:
                form.add_error("password1", error)
            else:
                if user is None:
                    auth_login(
                        request,
                        membership.user,
                        backend="django.contrib.auth.backends.ModelBackend",
                    )
                request.session[SESSION_KEY] = membership.tenant.code.hex
                messages.success(
                    request,
                    f"Welcome to {membership.tenant.name}: you are "
                    f"{membership.get_role_display().lower()}.",
                )
                return redirect("pools")
        status = 400
    response = render(
        request,
        "tenants/invitation_accept.html",
        {"invitation": invitation, "form": form},
        status=status,
    )
    # The token is in this page's URL: never send it to other sites in Referer (and
    # not "no-referrer": browsers then send "Origin: null" and the form fails CSRF).
    response["Referrer-Policy"] = "same-origin"
    return response
