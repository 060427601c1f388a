from django.conf import settings
from django.contrib import messages
from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_required
from django.http import HttpResponseRedirect
from django.shortcuts import render
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_POST

from tenants import services
from tenants.forms import EmailAuthenticationForm
from tenants.middleware import SESSION_KEY
from tenants.selectors import membership_for_user


class LoginView(auth_views.LoginView):
    form_class = EmailAuthenticationForm
    redirect_authenticated_user = True

    def form_valid(self, form):
        response = super().form_valid(form)
        membership = (
            self.request.user.memberships.select_related("tenant")
            .order_by("tenant__name")
            .first()
        )
        if membership is not None:
            self.request.session[SESSION_KEY] = membership.tenant.code.hex
        services.auth_login_succeeded(
            user=self.request.user, tenant=membership.tenant if membership else None
        )
        return response

    def form_invalid(self, form):
        services.auth_login_failed(email=self.request.POST.get("username", ""))
        return super().form_invalid(form)


def login_locked_out(request, response=None, credentials=None, *args, **kwargs):
    """django-axes calls this once the failure limit is reached."""
    services.auth_login_failed(
        email=request.POST.get("username", ""), reason="locked out"
    )
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

    if request.user.is_authenticated:
        services.auth_logged_out(user=request.user, tenant=request.tenant)
    logout(request)
    messages.success(request, "You are logged out.")
    return HttpResponseRedirect(reverse("login"))


@login_required
@require_POST
def tenant_switch(request):
    membership = membership_for_user(
        user=request.user, tenant_code=request.POST.get("tenant")
    )
    request.session[SESSION_KEY] = membership.tenant.code.hex
    messages.success(request, f"You are now working in {membership.tenant.name}.")
    target = request.POST.get("next") or reverse("pools")
    if not url_has_allowed_host_and_scheme(target, allowed_hosts={request.get_host()}):
        target = reverse("pools")
    return HttpResponseRedirect(target)


class PasswordResetConfirmView(auth_views.PasswordResetConfirmView):
    def form_valid(self, form):
        response = super().form_valid(form)
        services.auth_password_reset(user=form.user)
        return response
