"""API shapes for the caller's tenant, its members and pending invitations."""

from rest_framework import serializers

from billing.models import Plan
from tenants.models import Invitation, Membership, Tenant
from tenants.roles import Role


class PlanSerializer(serializers.ModelSerializer):
    class Meta:
        model = Plan
        fields = [
            "code",
            "name",
            "max_pools",
            "max_devices",
            "history_days",
            "api_requests_per_minute",
        ]
        read_only_fields = fields


class TenantSerializer(serializers.ModelSerializer):
    plan = PlanSerializer(allow_null=True, read_only=True)
    role = serializers.SerializerMethodField(help_text="Your role in this tenant.")

    class Meta:
        model = Tenant
        fields = ["code", "name", "slug", "status", "plan", "role", "created_at"]
        read_only_fields = fields

    def get_role(self, tenant) -> str:
        return self.context["membership"].role


class MemberSerializer(serializers.ModelSerializer):
    email = serializers.EmailField(source="user.email", read_only=True)
    full_name = serializers.CharField(source="user.full_name", read_only=True)

    class Meta:
        model = Membership
        fields = ["code", "email", "full_name", "role", "created_at"]
        read_only_fields = fields


class RoleChangeSerializer(serializers.Serializer):
    role = serializers.ChoiceField(choices=Role.choices)


class InvitationCreateSerializer(serializers.Serializer):
    email = serializers.EmailField()
    role = serializers.ChoiceField(choices=Role.choices, default=Role.VIEWER)


class InvitationSerializer(serializers.ModelSerializer):
    invited_by = serializers.SerializerMethodField()

    class Meta:
        model = Invitation
        fields = ["code", "email", "role", "invited_by", "created_at", "expires_at"]
        read_only_fields = fields

    def get_invited_by(self, invitation) -> str | None:
        return invitation.invited_by.email if invitation.invited_by_id else None
