"""Staff admin for identity and tenancy. Every change lands in the audit trail
(AuditedModelAdmin); suspending a tenant, changing a role, removing a member and
setting a password go through tenants.services, as the team and account pages do, so
they close sockets, end logins and keep the last-owner rule."""

from django import forms
from django.contrib import admin, messages
from django.contrib.auth import forms as auth_forms
from django.contrib.auth.admin import UserAdmin as BaseUserAdmin
from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import HttpResponseRedirect
from django.urls import reverse

from audit.admin_mixins import AuditedModelAdmin, ReadOnlyAdminMixin, admin_context
from billing.services import plan_limit_form_check
from poolsaas.request_context import bind_request_context
from tenants.models import Invitation, Membership, Tenant, User
from tenants.roles import Role
from tenants.services import (
    SESSION_CODE_KEY,
    auth_password_changed,
    membership_remove_by_staff,
    membership_role_change_by_staff,
    tenant_set_status,
    user_logins_end,
)


def _admin_login(request, extra_context=None):
    """Staff log in on the product's login page, with its throttling and second
    factor, never on a second login form that has neither."""
    if request.user.is_authenticated and not request.user.is_staff:
        return HttpResponseRedirect(reverse("pools"))
    return redirect_to_login(
        request.GET.get("next") or reverse("admin:index"), login_url=reverse("login")
    )


admin.site.login = _admin_login


class UserCreationForm(auth_forms.AdminUserCreationForm):
    class Meta:
        model = User
        fields = ("email", "full_name")


class UserChangeForm(auth_forms.UserChangeForm):
    class Meta:
        model = User
        fields = "__all__"


class MembershipInline(admin.TabularInline):
    """Read-only here: roles and removals are changed on the membership's own page,
    which goes through the services."""

    model = Membership
    extra = 0
    fields = ("tenant", "role", "created_at")
    readonly_fields = fields
    can_delete = False
    show_change_link = True

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False


@admin.register(User)
class UserAdmin(AuditedModelAdmin, BaseUserAdmin):
    form = UserChangeForm
    add_form = UserCreationForm
    fieldsets = (
        (None, {"fields": ("email", "password")}),
        ("Personal info", {"fields": ("full_name", "code")}),
        (
            "Permissions",
            {
                "fields": (
                    "is_active",
                    "is_staff",
                    "is_superuser",
                    "groups",
                    "user_permissions",
                )
            },
        ),
        ("Important dates", {"fields": ("last_login", "date_joined")}),
    )
    add_fieldsets = (
        (
            None,
            {
                "classes": ("wide",),
                "fields": (
                    "email",
                    "full_name",
                    "usable_password",
                    "password1",
                    "password2",
                ),
            },
        ),
    )
    readonly_fields = ("code", "last_login", "date_joined")
    list_display = ("email", "full_name", "is_staff", "is_active", "date_joined")
    list_filter = ("is_staff", "is_superuser", "is_active", "memberships__tenant")
    search_fields = ("email", "full_name", "code")
    ordering = ("email",)
    inlines = [MembershipInline]

    def save_model(self, request, obj, form, change):
        super().save_model(request, obj, form, change)
        if change and "is_active" in form.changed_data and not obj.is_active:
            # A disabled account's open sockets and tokens end now, not at expiry.
            with bind_request_context(admin_context()):
                user_logins_end(user=obj, actor=request.user, reason="deactivated")

    def user_change_password(self, request, id, form_url=""):
        response = super().user_change_password(request, id, form_url)
        # Success is a redirect to the user's change page (a redirect back to this
        # same page means the form was refused).
        if (
            request.method == "POST"
            and response.status_code == 302
            and response.url != request.get_full_path()
        ):
            user = self.get_object(request, id)
            # Ends the user's sessions, API tokens and sockets; staff changing
            # their own password keep this session (Django kept it logged in).
            keep = (
                request.session.get(SESSION_CODE_KEY)
                if user.pk == request.user.pk
                else None
            )
            with bind_request_context(admin_context()):
                auth_password_changed(
                    user=user, actor=request.user, keep_session=keep, how="admin"
                )
        return response


@admin.register(Tenant)
class TenantAdmin(AuditedModelAdmin):
    list_display = ("name", "slug", "status", "plan", "created_at")
    list_filter = ("status", "plan")
    search_fields = ("name", "slug", "code")
    list_select_related = ("plan",)
    prepopulated_fields = {"slug": ("name",)}
    # The status changes only through the actions below (tenant_set_status), so a
    # suspension always writes its own "tenant.suspended" event.
    readonly_fields = ("code", "status", "created_at")
    actions = ["suspend_tenants", "reactivate_tenants"]

    def get_changeform_initial_data(self, request):
        # A new tenant starts on Free; no plan at all means no limits.
        from billing.models import Plan

        initial = super().get_changeform_initial_data(request)
        free = Plan.objects.filter(code="free").values_list("pk", flat=True).first()
        initial.setdefault("plan", free)
        return initial

    def get_audit_tenant(self, obj, *, deleting=False):
        # A tenant's own chain, except when it is deleted: events protect their
        # tenant, so that one goes to the platform chain.
        return None if deleting else obj

    def _set_status(self, request, queryset, status: str, verb: str) -> None:
        changed = 0
        for tenant in queryset:
            if tenant.status != status:
                tenant_set_status(tenant=tenant, status=status, actor=request.user)
                changed += 1
        self.message_user(request, f"{verb.capitalize()}: {changed}.", messages.SUCCESS)

    @admin.action(description="Suspend selected tenants")
    def suspend_tenants(self, request, queryset):
        self._set_status(request, queryset, Tenant.Status.SUSPENDED, "suspended")

    @admin.action(description="Reactivate selected tenants")
    def reactivate_tenants(self, request, queryset):
        self._set_status(request, queryset, Tenant.Status.ACTIVE, "reactivated")


class MembershipAdminForm(forms.ModelForm):
    class Meta:
        model = Membership
        fields = ("user", "tenant", "role")

    def clean_role(self):
        role = self.cleaned_data["role"]
        current = self.instance
        if (
            current.pk
            and current.role == Role.OWNER
            and role != Role.OWNER
            and not Membership.objects.filter(
                tenant_id=current.tenant_id, role=Role.OWNER
            )
            .exclude(pk=current.pk)
            .exists()
        ):
            # Said here for a clear form error; the service checks again under
            # the team lock.
            raise ValidationError(
                "A tenant needs at least one owner: make someone else owner first."
            )
        return role

    def clean(self):
        cleaned = super().clean()
        tenant = cleaned.get("tenant")
        if tenant and self.instance.pk is None:
            plan_limit_form_check(self, tenant=tenant, limit="members")
        return cleaned


@admin.register(Membership)
class MembershipAdmin(AuditedModelAdmin):
    """Adding a membership is a plain (audited) admin add; changing its role and
    removing it go through the team services."""

    form = MembershipAdminForm
    list_display = ("user", "tenant", "role", "created_at")
    list_filter = ("tenant", "role")
    search_fields = ("user__email", "user__full_name", "tenant__name", "code")
    list_select_related = ("user", "tenant")
    autocomplete_fields = ("user", "tenant")
    readonly_fields = ("code", "created_at")

    def get_readonly_fields(self, request, obj=None):
        # A membership does not move to another user or tenant: remove it and
        # add another.
        if obj is not None:
            return (*self.readonly_fields, "user", "tenant")
        return self.readonly_fields

    def save_model(self, request, obj, form, change):
        if not change:
            return super().save_model(request, obj, form, change)
        if "role" in form.changed_data:
            stored = Membership.objects.get(pk=obj.pk)
            with bind_request_context(admin_context()):
                membership_role_change_by_staff(
                    staff=request.user, target=stored, role=obj.role
                )

    def audit_admin_change(self, request, obj, *, action, data):
        # A role change (and a removal) is written by its service, with what
        # changed; an admin.changed naming only "role" would repeat it.
        if action == "admin.changed" and data.get("fields") in (["role"], []):
            return
        if action == "admin.deleted":
            return
        super().audit_admin_change(request, obj, action=action, data=data)

    def delete_view(self, request, object_id, extra_context=None):
        obj = self.get_object(request, object_id)
        if request.method == "POST" and obj is not None:
            if not self.has_delete_permission(request, obj):
                raise PermissionDenied
            try:
                with bind_request_context(admin_context()):
                    membership_remove_by_staff(staff=request.user, target=obj)
            except ValidationError as error:
                self.message_user(request, " ".join(error.messages), messages.ERROR)
                return HttpResponseRedirect(
                    reverse("admin:tenants_membership_change", args=[obj.pk])
                )
            self.message_user(request, f"{obj} was removed.", messages.SUCCESS)
            return HttpResponseRedirect(reverse("admin:tenants_membership_changelist"))
        return super().delete_view(request, object_id, extra_context)

    def delete_model(self, request, obj):
        with bind_request_context(admin_context()):
            membership_remove_by_staff(staff=request.user, target=obj)

    def delete_queryset(self, request, queryset):
        # One by one through the service: each refusal (a last owner) is said,
        # the others are removed.
        for membership in queryset.select_related("user", "tenant"):
            try:
                with bind_request_context(admin_context()):
                    membership_remove_by_staff(staff=request.user, target=membership)
            except ValidationError as error:
                self.message_user(
                    request, f"{membership}: {' '.join(error.messages)}", messages.ERROR
                )


@admin.register(Invitation)
class InvitationAdmin(ReadOnlyAdminMixin, AuditedModelAdmin):
    """Read-only: invitations are created and revoked by tenant admins on the team
    page. The token hash is never shown."""

    list_display = ("email", "tenant", "role", "state", "created_at", "expires_at")
    list_filter = ("tenant", "role")
    search_fields = ("email", "tenant__name", "code")
    list_select_related = ("tenant",)
    fields = (
        "code",
        "tenant",
        "email",
        "role",
        "invited_by",
        "created_at",
        "expires_at",
        "accepted_at",
        "accepted_by",
        "revoked_at",
    )
    readonly_fields = fields

    @admin.display(description="State")
    def state(self, obj: Invitation) -> str:
        if obj.accepted_at:
            return "accepted"
        if obj.revoked_at:
            return "revoked"
        return "pending" if obj.is_pending else "expired"
