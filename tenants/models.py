import uuid

from django.contrib.auth.models import (
    AbstractBaseUser,
    BaseUserManager,
    PermissionsMixin,
)
from django.db import models
from django.utils import timezone
from django_otp.models import Device, ThrottlingMixin

from tenants.roles import Role


class UserManager(BaseUserManager):
    use_in_migrations = True

    def _create(self, email: str, password: str | None, **fields):
        if not email:
            raise ValueError("An e-mail address is required.")
        user = self.model(email=self.normalize_email(email).lower(), **fields)
        user.set_password(password)
        user.save(using=self._db)
        return user

    def create_user(self, email: str, password: str | None = None, **fields):
        fields.setdefault("is_staff", False)
        fields.setdefault("is_superuser", False)
        return self._create(email, password, **fields)

    def create_superuser(self, email: str, password: str | None = None, **fields):
        fields["is_staff"] = True
        fields["is_superuser"] = True
        return self._create(email, password, **fields)

    def get_by_natural_key(self, username):
        return self.get(email__iexact=username)


class User(AbstractBaseUser, PermissionsMixin):
    """A person. Logs in with an e-mail address; belongs to tenants by Membership."""

    code = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    email = models.EmailField(unique=True)
    full_name = models.CharField(max_length=150, blank=True)
    is_active = models.BooleanField(default=True)
    is_staff = models.BooleanField(
        default=False, help_text="Platform staff: may use the admin site."
    )
    date_joined = models.DateTimeField(default=timezone.now)
    # Bumped when the user ends their other logins: API tokens carry the value they
    # were issued under, so every older token stops working at once.
    token_epoch = models.PositiveIntegerField(default=0, editable=False)

    objects = UserManager()

    USERNAME_FIELD = "email"
    EMAIL_FIELD = "email"
    REQUIRED_FIELDS: list[str] = []

    class Meta:
        ordering = ["email"]

    def __str__(self) -> str:
        return self.email

    def get_full_name(self) -> str:
        return self.full_name or self.email

    def get_short_name(self) -> str:
        return self.full_name.split(" ")[0] if self.full_name else self.email


class Tenant(models.Model):
    """A customer: a pool owner or a pool-service company. Owns pools, brokers, team."""

    class Status(models.TextChoices):
        ACTIVE = "active", "Active"
        SUSPENDED = "suspended", "Suspended"

    code = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    name = models.CharField(max_length=120)
    slug = models.SlugField(max_length=60, unique=True)
    status = models.CharField(max_length=12, choices=Status, default=Status.ACTIVE)
    plan = models.ForeignKey(
        "billing.Plan", null=True, blank=True, on_delete=models.PROTECT
    )
    created_at = models.DateTimeField(auto_now_add=True)
    require_two_factor = models.BooleanField(
        default=False,
        help_text="Owners and admins must use two-factor authentication.",
    )

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    @property
    def is_active(self) -> bool:
        return self.status == self.Status.ACTIVE


class Membership(models.Model):
    """A user's role in one tenant."""

    code = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="members")
    user = models.ForeignKey(User, on_delete=models.CASCADE, related_name="memberships")
    role = models.CharField(max_length=10, choices=Role, default=Role.VIEWER)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["tenant__name", "user__email"]
        constraints = [
            models.UniqueConstraint(
                fields=["tenant", "user"], name="membership_unique_user_per_tenant"
            )
        ]

    def __str__(self) -> str:
        return f"{self.user} in {self.tenant} ({self.role})"


class Invitation(models.Model):
    """An e-mailed, expiring, single-use invitation to join a tenant with a role.

    Only a hash of the link's token is stored, so a database leak yields no usable link.
    """

    code = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    tenant = models.ForeignKey(
        Tenant, on_delete=models.CASCADE, related_name="invitations"
    )
    email = models.EmailField()
    role = models.CharField(max_length=10, choices=Role, default=Role.VIEWER)
    token_hash = models.CharField(max_length=64, unique=True)
    invited_by = models.ForeignKey(
        User, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField()
    accepted_at = models.DateTimeField(null=True, blank=True)
    accepted_by = models.ForeignKey(
        User, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"Invitation of {self.email} to {self.tenant}"

    @property
    def is_pending(self) -> bool:
        return (
            self.accepted_at is None
            and self.revoked_at is None
            and self.expires_at > timezone.now()
        )


class UserSession(models.Model):
    """One browser login: where and when, for the "where you're logged in" page.

    The session itself stays in Django's session store; this row follows its key
    (which changes on login, tenant switch and password change) through the code
    kept in the session.
    """

    code = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    user = models.ForeignKey(User, on_delete=models.CASCADE, related_name="sessions")
    session_key = models.CharField(max_length=40, db_index=True)
    ip = models.GenericIPAddressField(null=True, blank=True)
    user_agent = models.CharField(max_length=400, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    last_seen_at = models.DateTimeField(default=timezone.now)
    ended_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-last_seen_at"]

    def __str__(self) -> str:
        return f"Session of {self.user} from {self.ip or 'unknown address'}"


class RecoveryCode(models.Model):
    """A single-use two-factor recovery code. Only its hash is stored."""

    user = models.ForeignKey(
        User, on_delete=models.CASCADE, related_name="recovery_codes"
    )
    code_hash = models.CharField(max_length=64)
    created_at = models.DateTimeField(auto_now_add=True)
    used_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["user", "code_hash"], name="recovery_code_unique_per_user"
            )
        ]

    def __str__(self) -> str:
        return f"Recovery code of {self.user}"


class TotpDevice(ThrottlingMixin, Device):
    """A user's authenticator app (TOTP, RFC 6238: 6 digits, 30 s steps).

    A django-otp device, so django-otp's middleware and login() know it; unlike
    django-otp's own TOTP model the shared secret is encrypted at rest and decrypted
    only to check a code or to show it once at enrolment. Each wrong code doubles
    the wait before the next may be tried (ThrottlingMixin), and a code is accepted
    once only (last_t).
    """

    key_encrypted = models.TextField(editable=False)
    last_t = models.BigIntegerField(default=-1, editable=False)
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    STEP = 30
    DIGITS = 6
    # One step either way: clocks of phones drift.
    TOLERANCE = 1

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["user", "confirmed"], name="totp_device_one_per_state"
            )
        ]

    def get_throttle_factor(self) -> int:
        from django.conf import settings

        return getattr(settings, "OTP_TOTP_THROTTLE_FACTOR", 1)

    @property
    def bin_key(self) -> bytes:
        from devices.fields import decrypt_secret

        return bytes.fromhex(
            decrypt_secret(self.key_encrypted, label="two-factor secret")
        )

    def config_url(self) -> str:
        """The otpauth:// URL an authenticator app reads from the QR code."""
        from base64 import b32encode
        from urllib.parse import quote, urlencode

        from django.conf import settings

        issuer = getattr(settings, "OTP_TOTP_ISSUER", "poolsaas").replace(":", "")
        label = quote(f"{issuer}:{self.user.email}")
        params = urlencode(
            {
                "secret": b32encode(self.bin_key).decode().rstrip("="),
                "algorithm": "SHA1",
                "digits": self.DIGITS,
                "period": self.STEP,
            }
        )
        return f"otpauth://totp/{label}?{params}&issuer={quote(issuer)}"

    def verify_token(self, token) -> bool:
        import time

        from django_otp.oath import TOTP

        allowed, _ = self.verify_is_allowed()
        if not allowed:
            return False
        token = str(token).strip().replace(" ", "")
        verified = False
        if token.isascii() and token.isdigit() and len(token) == self.DIGITS:
            totp = TOTP(self.bin_key, self.STEP, 0, self.DIGITS, 0)
            totp.time = time.time()
            verified = totp.verify(int(token), self.TOLERANCE, self.last_t + 1)
            if verified:
                self.last_t = totp.t()
                self.throttle_reset(commit=False)
                self.save(
                    update_fields=[
                        "last_t",
                        "throttling_failure_count",
                        "throttling_failure_timestamp",
                    ]
                )
        if not verified:
            self.throttle_increment(commit=True)
        return verified
