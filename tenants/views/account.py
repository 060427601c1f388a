"""The user's own account: password, two-factor authentication, and where they are
logged in. Every change goes through one service in tenants.services."""

import re
from base64 import b32encode

import segno
from django.contrib import messages
from django.contrib.auth import update_session_auth_hash
from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.shortcuts import redirect, render
from django.urls import reverse_lazy
from django.utils.safestring import mark_safe
from django.views.decorators.http import require_POST
from django_otp import login as otp_login

from tenants import services
from tenants.forms import PasswordConfirmForm, TwoFactorCodeForm
from tenants.models import TotpDevice
from tenants.roles import Action
from tenants.selectors import (
    membership_require,
    two_factor_device,
    two_factor_required_by,
    user_sessions,
)

_BROWSERS = [
    ("Edge", r"Edg/"),
    ("Opera", r"OPR/"),
    ("Firefox", r"Firefox/"),
    ("Chrome", r"Chrome/|CriOS/"),
    ("Safari", r"Safari/"),
]
_SYSTEMS = [
    ("Android", r"Android"),
    ("iPhone", r"iPhone"),
    ("iPad", r"iPad"),
    ("Windows", r"Windows"),
    ("macOS", r"Mac OS X|Macintosh"),
    ("Linux", r"Linux|X11"),
]


def describe_user_agent(agent: str) -> str:
    """ "Firefox on Linux" from a User-Agent header; good enough to recognise a
    device, never trusted for anything."""
    if not agent:
        return "Unknown device"
    browser = next((n for n, p in _BROWSERS if re.search(p, agent)), "")
    system = next((n for n, p in _SYSTEMS if re.search(p, agent)), "")
    if browser and system:
        return f"{browser} on {system}"
    return browser or system or agent[:60]


def _session_code(request) -> str | None:
    return request.session.get(services.SESSION_CODE_KEY)


def _flash_ended(request, ended: dict) -> None:
    sessions = ended["sessions"]
    messages.success(
        request,
        f"Logged out {sessions} other session{'s' if sessions != 1 else ''}; API "
        "tokens and live connections of your other logins ended too.",
    )


@login_required
def account(request):
    """Password, two-factor and the list of sessions, on one page."""
    current = _session_code(request)
    rows = [
        {
            "session": row,
            "device": describe_user_agent(row.user_agent),
            "is_current": row.code.hex == current,
        }
        for row in user_sessions(user=request.user)
    ]
    device = two_factor_device(user=request.user)
    context = {
        "rows": rows,
        "others": sum(1 for row in rows if not row["is_current"]),
        "two_factor": device,
        "recovery_left": request.user.recovery_codes.filter(
            used_at__isnull=True
        ).count()
        if device
        else 0,
        "required_by": two_factor_required_by(user=request.user),
    }
    return render(request, "tenants/account.html", context)


@login_required
@require_POST
def sessions_end_others(request):
    ended = services.user_sessions_end_others(
        user=request.user, keep_session=_session_code(request)
    )
    _flash_ended(request, ended)
    return redirect("account")


@login_required
@require_POST
def session_end(request, code):
    if code == _session_code(request):
        messages.info(request, "To end this session, log out.")
        return redirect("account")
    row = services.user_session_end(user=request.user, code=code)
    messages.success(
        request, f"Logged out {describe_user_agent(row.user_agent)} ({row.ip})."
    )
    return redirect("account")


class PasswordChangeView(auth_views.PasswordChangeView):
    """A new password: this session stays logged in, every other one (browser, API
    token, live socket) ends."""

    template_name = "tenants/password_change.html"
    success_url = reverse_lazy("account")

    def form_valid(self, form):
        form.save()
        # Keeps this session (it cycles its key; the session's code stays).
        update_session_auth_hash(self.request, form.user)
        services.auth_password_changed(
            user=form.user,
            actor=form.user,
            keep_session=_session_code(self.request),
            how="change",
        )
        messages.success(
            self.request,
            "Your password was changed. Your other sessions and API tokens were "
            "logged out.",
        )
        return redirect(self.success_url)


# --- two-factor -----------------------------------------------------------------


def _qr_svg(url: str) -> str:
    # segno writes the SVG itself: no image request, nothing inline to run.
    return mark_safe(  # noqa: S308 - segno's own markup of our own URL
        segno.make(url, error="m").svg_inline(scale=5, border=2, omitsize=True)
    )


def _grouped(secret: str) -> str:
    return " ".join(secret[i : i + 4] for i in range(0, len(secret), 4))


def _recovery_page(request, codes: list[str], *, title: str):
    response = render(
        request, "tenants/recovery_codes.html", {"codes": codes, "title": title}
    )
    # Shown once: not to be kept by a cache or shown again by the back button.
    response["Cache-Control"] = "no-store"
    return response


@login_required
@require_POST
def two_factor_setup(request):
    services.two_factor_setup(user=request.user)
    return redirect("two_factor_confirm")


@login_required
def two_factor_confirm(request):
    """Scan the QR code, then type the first code the app shows."""
    device = TotpDevice.objects.filter(user=request.user, confirmed=False).first()
    if device is None:
        return redirect("account_two_factor")
    form = TwoFactorCodeForm(request.POST if request.method == "POST" else None)
    status = 200
    if request.method == "POST":
        if form.is_valid():
            try:
                device, codes = services.two_factor_confirm(
                    user=request.user, code=form.cleaned_data["code"]
                )
            except ValidationError as error:
                form.add_error("code", error)
            else:
                # This session has just shown the second factor.
                otp_login(request, device)
                return _recovery_page(
                    request, codes, title="Two-factor authentication is on"
                )
        status = 400
    secret = b32encode(device.bin_key).decode().rstrip("=")
    response = render(
        request,
        "tenants/two_factor_setup.html",
        {
            "form": form,
            "qr": _qr_svg(device.config_url()),
            "secret": _grouped(secret),
        },
        status=status,
    )
    response["Cache-Control"] = "no-store"
    return response


@login_required
def account_two_factor(request):
    """Two-factor state: set it up, renew recovery codes, or turn it off."""
    device = two_factor_device(user=request.user)
    context = {
        "two_factor": device,
        "required_by": two_factor_required_by(user=request.user),
        "recovery_left": request.user.recovery_codes.filter(
            used_at__isnull=True
        ).count(),
        "code_form": TwoFactorCodeForm(),
        "password_form": PasswordConfirmForm(),
    }
    return render(request, "tenants/two_factor.html", context)


@login_required
@require_POST
def two_factor_recovery_renew(request):
    form = TwoFactorCodeForm(request.POST)
    if form.is_valid():
        try:
            codes = services.two_factor_recovery_codes_renew(
                user=request.user, code=form.cleaned_data["code"]
            )
        except services.TwoFactorInvalid as error:
            messages.error(request, str(error))
        else:
            return _recovery_page(request, codes, title="New recovery codes")
    else:
        messages.error(request, "Enter the code your authenticator app shows.")
    return redirect("account_two_factor")


@login_required
@require_POST
def two_factor_disable(request):
    form = PasswordConfirmForm(request.POST)
    if not form.is_valid():
        messages.error(request, "Enter your password to turn two-factor off.")
        return redirect("account_two_factor")
    try:
        services.two_factor_disable(
            user=request.user, password=form.cleaned_data["password"]
        )
    except ValidationError as error:
        messages.error(request, " ".join(error.messages))
    else:
        messages.success(request, "Two-factor authentication is off.")
    return redirect("account_two_factor")


@login_required
@require_POST
def tenant_two_factor(request):
    """The owner's switch: require two-factor of the tenant's owners and admins."""
    membership = request.membership
    if membership is None:
        return redirect("team")
    membership_require(membership=membership, action=Action.OWN)
    required = request.POST.get("required") == "on"
    try:
        services.tenant_two_factor_set(membership=membership, required=required)
    except ValidationError as error:
        messages.error(request, " ".join(error.messages))
    else:
        messages.success(
            request,
            "Owners and admins now need two-factor authentication."
            if required
            else "Two-factor authentication is now optional for owners and admins.",
        )
    return redirect("team")
