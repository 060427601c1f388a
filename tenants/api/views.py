"""API views for the caller's tenant, its members and invitations."""

from drf_spectacular.utils import OpenApiExample, extend_schema, extend_schema_view
from rest_framework import mixins, status
from rest_framework.response import Response

from poolsaas.api.viewsets import ApiView, TenantScopedViewSet
from tenants import selectors, services
from tenants.api import serializers as s
from tenants.models import Invitation, Membership
from tenants.roles import Action

MEMBER_EXAMPLE = {
    "code": "4e5f6a7b-8c9d-4e0f-a1b2-c3d4e5f6a7b8",
    "email": "olivia@acme.test",
    "full_name": "Olivia",
    "role": "operator",
    "created_at": "2026-05-01T09:00:00Z",
}
INVITATION_EXAMPLE = {
    "code": "6a7b8c9d-0e1f-4a2b-8c3d-4e5f6a7b8c9d",
    "email": "new@acme.test",
    "role": "viewer",
    "invited_by": "alice@acme.test",
    "created_at": "2026-05-01T09:00:00Z",
    "expires_at": "2026-05-04T09:00:00Z",
}


class TenantView(ApiView):
    """The tenant the token belongs to."""

    @extend_schema(
        tags=["tenant"],
        summary="The tenant your token is for, with its plan and your role",
        responses={200: s.TenantSerializer},
        examples=[
            OpenApiExample(
                "Tenant",
                value={
                    "code": "0d9c8b7a-6f5e-4d3c-8b1a-09f8e7d6c5b4",
                    "name": "Acme Pools",
                    "slug": "acme",
                    "status": "active",
                    "plan": None,
                    "role": "owner",
                    "created_at": "2026-05-01T09:00:00Z",
                },
                response_only=True,
            )
        ],
    )
    def get(self, request):
        membership = request.membership
        return Response(
            s.TenantSerializer(
                membership.tenant, context={"membership": membership}
            ).data
        )


def _members_for(*, membership):
    return selectors.tenant_members(membership=membership)


@extend_schema_view(
    list=extend_schema(
        tags=["members"],
        summary="The tenant's members",
        responses={200: s.MemberSerializer(many=True)},
        examples=[
            OpenApiExample(
                "A page",
                value={
                    "count": 1,
                    "next": None,
                    "previous": None,
                    "results": [MEMBER_EXAMPLE],
                },
                response_only=True,
            )
        ],
    ),
    retrieve=extend_schema(
        tags=["members"],
        summary="One member",
        examples=[OpenApiExample("Member", value=MEMBER_EXAMPLE, response_only=True)],
    ),
    partial_update=extend_schema(
        tags=["members"],
        summary="Change a member's role (admins; owners for owners)",
        request=s.RoleChangeSerializer,
        examples=[
            OpenApiExample("Make admin", value={"role": "admin"}, request_only=True),
            OpenApiExample(
                "Changed", value={**MEMBER_EXAMPLE, "role": "admin"}, response_only=True
            ),
        ],
    ),
    destroy=extend_schema(
        tags=["members"],
        summary="Remove a member (admins), or leave yourself",
    ),
    create=extend_schema(
        tags=["members"],
        summary="Invite someone by e-mail (admins); answers the invitation",
        request=s.InvitationCreateSerializer,
        responses={201: s.InvitationSerializer},
        examples=[
            OpenApiExample(
                "Invite",
                value={"email": "new@acme.test", "role": "viewer"},
                request_only=True,
            ),
            OpenApiExample("Invited", value=INVITATION_EXAMPLE, response_only=True),
        ],
    ),
)
class MemberViewSet(
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.DestroyModelMixin,
    TenantScopedViewSet,
):
    queryset = Membership.objects.none()
    serializer_class = s.MemberSerializer
    list_selector = _members_for
    get_selector = selectors.member_get_for_user
    not_found_message = "No such member."
    http_method_names = ["get", "post", "patch", "delete", "head", "options"]
    # Anyone may leave; membership_remove decides who may remove whom.
    actions = {"destroy": Action.VIEW}

    def create(self, request, *args, **kwargs):
        data = s.InvitationCreateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        invitation, _token = services.invitation_create(
            membership=self.membership, **data.validated_data
        )
        return Response(
            s.InvitationSerializer(invitation).data, status=status.HTTP_201_CREATED
        )

    def partial_update(self, request, *args, **kwargs):
        target = self.get_object()
        data = s.RoleChangeSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        target = services.membership_role_change(
            membership=self.membership, target=target, role=data.validated_data["role"]
        )
        return Response(s.MemberSerializer(target).data)

    def perform_destroy(self, instance):
        services.membership_remove(membership=self.membership, target=instance)


def _invitations_for(*, membership):
    return selectors.invitations_pending(membership=membership).order_by("-created_at")


def _invitation_get(*, membership, code, action):
    return selectors.invitation_get_for_user(membership=membership, code=code)


@extend_schema_view(
    list=extend_schema(
        tags=["members"],
        summary="Pending invitations (admins)",
        examples=[
            OpenApiExample(
                "A page",
                value={
                    "count": 1,
                    "next": None,
                    "previous": None,
                    "results": [INVITATION_EXAMPLE],
                },
                response_only=True,
            )
        ],
    ),
    destroy=extend_schema(tags=["members"], summary="Withdraw an invitation (admins)"),
)
class InvitationViewSet(
    mixins.ListModelMixin, mixins.DestroyModelMixin, TenantScopedViewSet
):
    queryset = Invitation.objects.none()
    serializer_class = s.InvitationSerializer
    list_selector = _invitations_for
    get_selector = _invitation_get
    not_found_message = "No such invitation."
    actions = {"list": Action.MANAGE, "destroy": Action.MANAGE}

    def perform_destroy(self, instance):
        services.invitation_revoke(membership=self.membership, invitation=instance)
