"""Staff admin for identity and tenancy. Every change lands in the audit trail
(AuditedModelAdmin); suspending a tenant goes through tenants.services."""

from django.contrib import admin, messages
from django.contrib.auth import forms as auth_forms
from django.contrib.auth.admin import UserAdmin as BaseUserAdmin

from audit.admin_mixins import AuditedModelAdmin, ReadOnlyAdminMixin
from tenants.models import Invitation, Membership, Tenant, User
from tenants.services import tenant_set_status


class UserCreationForm(auth_forms.AdminUserCreationForm):
    class Meta:
        model = User
        fields = ("email", "full_name")


class UserChangeForm(auth_forms.UserChangeForm):
    class Meta:
        model = User
        fields = "__all__"


class MembershipInline(admin.TabularInline):
    model = Membership
    extra = 0
    fields = ("tenant", "role", "created_at")
    readonly_fields = ("created_at",)
    autocomplete_fields = ("tenant",)


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
            self.audit_admin_change(
                request, user, action="admin.changed", data={"fields": ["password"]}
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


@admin.register(Membership)
class MembershipAdmin(AuditedModelAdmin):
    list_display = ("user", "tenant", "role", "created_at")
    list_filter = ("tenant", "role")
    search_fields = ("user__email", "user__full_name", "tenant__name", "code")
    list_select_related = ("user", "tenant")
    autocomplete_fields = ("user", "tenant")
    readonly_fields = ("code", "created_at")


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
