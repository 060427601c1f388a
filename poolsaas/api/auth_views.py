"""POST /api/login, /api/token/refresh and /api/logout.

Login goes through django.contrib.auth.authenticate(request=...), so django-axes counts
failures and locks out exactly as on the login page; lockouts answer 429 with
Retry-After in the API's error shape. A user with two-factor authentication sends the
code from their app (or a recovery code) as `otp` in the same request.

A login lasts REFRESH_TOKEN_LIFETIME in all: refreshing rotates the token but keeps its
expiry, and a password change, a reset or "log out other sessions" ends it at once.
"""

import secrets
from urllib.parse import urlsplit

from django.conf import settings
from django.contrib.auth import authenticate
from django.contrib.auth.signals import user_logged_in
from django.http import Http404
from drf_spectacular.utils import OpenApiExample, extend_schema
from rest_framework import exceptions, serializers, status
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework_simplejwt.settings import api_settings as jwt_settings

from poolsaas.api.authentication import api_refusal
from poolsaas.api.errors import Throttled
from poolsaas.api.throttling import AnonThrottle
from poolsaas.api.viewsets import ApiView
from tenants import auth, services
from tenants.models import User
from tenants.roles import two_factor_required_for
from tenants.selectors import two_factor_enabled


class LoginRequest(serializers.Serializer):
    email = serializers.EmailField()
    password = serializers.CharField(
        max_length=256, trim_whitespace=False, style={"input_type": "password"}
    )
    tenant = serializers.UUIDField(
        required=False,
        allow_null=True,
        help_text="Tenant code; without it, the first of your tenants by name.",
    )
    otp = serializers.CharField(
        required=False,
        allow_blank=True,
        max_length=64,
        help_text="With two-factor authentication: the 6-digit code of your "
        "authenticator app, or one of your recovery codes (used up).",
    )


class LoginResponse(serializers.Serializer):
    token = serializers.CharField(help_text="Access token (Bearer), short-lived.")
    refresh = serializers.CharField(help_text="Refresh token for /api/token/refresh.")
    mqttGateway = serializers.CharField(  # noqa: N815 (the published contract)
        help_text="The MQTT gateway's URL (MQTT 3.1.1 over WebSocket, subprotocol "
        "`mqtt`): connect with MQTT.js or paho-mqtt, `clientId` as the client id and "
        "`token` as the password. Live data flows through it, never directly from a "
        "broker."
    )
    brokerUrl = serializers.CharField(  # noqa: N815
        help_text="The same URL as `mqttGateway` (what MQTT.js dashboards read)."
    )
    liveUrl = serializers.CharField(  # noqa: N815
        help_text="The JSON WebSocket of the pool pages: `<liveUrl>pools/<pool "
        "code>/` and `<liveUrl>tenant/`."
    )
    clientId = serializers.CharField(  # noqa: N815
        help_text="The MQTT client id: `dashboard-<user code>-` (stable per user) and "
        "a suffix unique to this login."
    )
    tenant = serializers.CharField(help_text="Tenant code (hex).")
    role = serializers.CharField()
    expiresIn = serializers.IntegerField(  # noqa: N815
        help_text="Seconds until the access token expires."
    )


class RefreshRequest(serializers.Serializer):
    refresh = serializers.CharField()


class RefreshResponse(serializers.Serializer):
    token = serializers.CharField()
    refresh = serializers.CharField(
        help_text="A new refresh token; the one sent is now unusable."
    )
    expiresIn = serializers.IntegerField()  # noqa: N815


_TOKEN_EXAMPLE = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJ0b2tlbl90eXBlIjoi..."  # noqa: S105


def _socket_base() -> str:
    # From SITE_URL, never the request's Host header (a forged Host would hand a
    # client someone else's gateway); ws:// only where the site is http (development).
    site = urlsplit(settings.SITE_URL)
    scheme = "wss" if site.scheme == "https" else "ws"
    return f"{scheme}://{site.netloc}"


def gateway_url() -> str:
    """The MQTT gateway's URL (gateway/consumer.py)."""
    return f"{_socket_base()}/mqtt"


def live_url() -> str:
    """The JSON live sockets' base URL (devices/consumers/)."""
    return f"{_socket_base()}/ws/"


def client_id_for(user: User) -> str:
    """A stable per-user prefix and a per-login suffix."""
    return f"dashboard-{user.code.hex}-{secrets.token_hex(4)}"


def _expires_in() -> int:
    return int(jwt_settings.ACCESS_TOKEN_LIFETIME.total_seconds())


class AnonApiView(ApiView):
    authentication_classes: list = []
    permission_classes = [AllowAny]
    throttle_classes = [AnonThrottle]

    def get_authenticate_header(self, request):
        # Bad credentials and tokens are 401 here too (DRF says 403 without this).
        return 'Bearer realm="api"'


class LoginView(AnonApiView):
    """Log in with e-mail and password (and optionally a tenant code).

    Failed logins are throttled and locked out as on the login page (429 with
    Retry-After). Send the token as `Authorization: Bearer <token>`; live data comes
    from the MQTT gateway at `brokerUrl` (the token as the MQTT password, valid there
    for the whole login) or the JSON socket at `liveUrl`, never from a broker.
    """

    @extend_schema(
        tags=["auth"],
        auth=[],
        request=LoginRequest,
        responses={200: LoginResponse},
        examples=[
            OpenApiExample(
                "Log in",
                value={"email": "alice@acme.test", "password": "correct-horse"},
                request_only=True,
            ),
            OpenApiExample(
                "Logged in",
                value={
                    "token": _TOKEN_EXAMPLE,
                    "refresh": _TOKEN_EXAMPLE,
                    "mqttGateway": "wss://app.poolsaas.example/mqtt",
                    "brokerUrl": "wss://app.poolsaas.example/mqtt",
                    "liveUrl": "wss://app.poolsaas.example/ws/",
                    "clientId": "dashboard-3f1c0b0e6d8a4f0e9b7a1c2d3e4f5a6b-9c1e2a7b",
                    "tenant": "0d9c8b7a6f5e4d3c2b1a09f8e7d6c5b4",
                    "role": "owner",
                    "expiresIn": 900,
                },
                response_only=True,
            ),
        ],
        summary="Log in: tokens and the gateway to use for live data",
    )
    def post(self, request):
        data = LoginRequest(data=request.data)
        data.is_valid(raise_exception=True)
        email = data.validated_data["email"].strip().lower()
        django_request = request._request
        user = authenticate(
            request=django_request,
            username=email,
            password=data.validated_data["password"],
        )
        if getattr(django_request, "axes_locked_out", False):
            # Answer here, in the API's shape, instead of the login page's lockout.
            django_request.axes_locked_out = False
            services.auth_login_failed(email=email, reason="locked out")
            wait = settings.AXES_COOLOFF_TIME.total_seconds()
            raise Throttled(
                wait=wait,
                limit="login",
                message="Too many failed logins: try again in "
                f"{int(wait // 60)} minutes.",
            )
        if user is None:
            services.auth_login_failed(email=email)
            raise exceptions.AuthenticationFailed(
                "The e-mail address or password is not right.", code="bad_credentials"
            )
        try:
            membership = auth.membership_for_user(
                user=user, tenant_code=data.validated_data.get("tenant")
            )
        except Http404:
            services.auth_login_failed(email=email, reason="no tenant")
            raise exceptions.AuthenticationFailed(
                "You are not a member of this tenant.", code="not_a_member"
            ) from None
        second_factor = self._second_factor(user, data.validated_data.get("otp", ""))
        if not second_factor and two_factor_required_for(membership=membership):
            services.auth_login_failed(email=email, reason="second factor not set up")
            raise exceptions.PermissionDenied(
                f"{membership.tenant.name} requires two-factor authentication of "
                "owners and admins: set it up on the Account page first.",
                code="two_factor_setup_required",
            )
        # Resets axes' failure count, as a page login does.
        user_logged_in.send(sender=User, request=django_request, user=user)
        services.auth_login_succeeded(
            user=user, tenant=membership.tenant, second_factor=second_factor
        )
        refresh = auth.refresh_token_for(
            membership=membership, second_factor=bool(second_factor)
        )
        return Response(
            {
                "token": str(refresh.access_token),
                "refresh": str(refresh),
                "mqttGateway": gateway_url(),
                "brokerUrl": gateway_url(),
                "liveUrl": live_url(),
                "clientId": client_id_for(user),
                "tenant": membership.tenant.code.hex,
                "role": membership.role,
                "expiresIn": _expires_in(),
            }
        )

    @staticmethod
    def _second_factor(user: User, otp: str) -> str:
        """ "" for a user without two-factor, else how the code was checked."""
        if not two_factor_enabled(user=user):
            return ""
        if not otp:
            raise exceptions.AuthenticationFailed(
                "This account uses two-factor authentication: send the code of "
                "your authenticator app (or a recovery code) as otp.",
                code="otp_required",
            )
        try:
            return services.two_factor_verify(user=user, code=otp)
        except services.TwoFactorInvalid as exc:
            if exc.wait:
                raise Throttled(wait=exc.wait, limit="otp", message=str(exc)) from None
            raise exceptions.AuthenticationFailed(
                str(exc), code="otp_invalid"
            ) from None


def _refresh_token(raw: str, *, for_rotation: bool = False):
    try:
        return auth.refresh_token_read(raw, for_rotation=for_rotation)
    except auth.NotAuthenticated as exc:
        raise api_refusal(exc) from None


class RefreshView(AnonApiView):
    """Trade a refresh token for new tokens; the one sent cannot be used again."""

    @extend_schema(
        tags=["auth"],
        auth=[],
        request=RefreshRequest,
        responses={200: RefreshResponse},
        examples=[
            OpenApiExample(
                "Refresh", value={"refresh": _TOKEN_EXAMPLE}, request_only=True
            ),
            OpenApiExample(
                "New tokens",
                value={
                    "token": _TOKEN_EXAMPLE,
                    "refresh": _TOKEN_EXAMPLE,
                    "expiresIn": 900,
                },
                response_only=True,
            ),
        ],
        summary="New access and refresh tokens; the refresh token sent is used up",
    )
    def post(self, request):
        data = RefreshRequest(data=request.data)
        data.is_valid(raise_exception=True)
        refresh = _refresh_token(data.validated_data["refresh"], for_rotation=True)
        try:
            # A changed password, an ended login or a removed member ends its
            # refreshing too.
            caller = auth.caller_from_refresh_token(refresh)
        except (
            auth.NotAuthenticated,
            auth.NotAMember,
            auth.TwoFactorRequired,
            auth.TenantSuspended,
        ) as exc:
            raise api_refusal(exc) from None
        refresh["role"] = caller.membership.role
        try:
            refresh = services.auth_token_refresh(refresh=refresh, user=caller.user)
        except services.TokenRefused as exc:
            raise exceptions.AuthenticationFailed(
                str(exc), code="token_not_valid"
            ) from None
        access = refresh.access_token
        # Never beyond the login's end: an access token outliving its refresh
        # token would extend it.
        if access["exp"] > refresh["exp"]:
            access["exp"] = refresh["exp"]
        return Response(
            {
                "token": str(access),
                "refresh": str(refresh),
                "expiresIn": max(0, int(access["exp"] - access["iat"])),
            }
        )


class LogoutView(AnonApiView):
    """Blacklist a refresh token."""

    @extend_schema(
        tags=["auth"],
        auth=[],
        request=RefreshRequest,
        responses={204: None},
        examples=[
            OpenApiExample(
                "Log out", value={"refresh": _TOKEN_EXAMPLE}, request_only=True
            )
        ],
        summary="Blacklist the refresh token (the access token expires on its own)",
    )
    def post(self, request):
        data = RefreshRequest(data=request.data)
        data.is_valid(raise_exception=True)
        refresh = _refresh_token(data.validated_data["refresh"])
        refresh.blacklist()
        user = auth.token_user(refresh)
        if user is not None:
            services.auth_logged_out(user=user, tenant=auth.token_tenant(refresh))
        return Response(status=status.HTTP_204_NO_CONTENT)
