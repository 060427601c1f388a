"""Two-factor authentication: an authenticator app (TOTP) and recovery codes.

Enrolment is two steps: two_factor_setup makes an unconfirmed device (its QR code
is shown), two_factor_confirm checks a first code from the app, confirms the device
and hands out the recovery codes, once. At login, two_factor_verify checks a code or
a recovery code for both the login page and POST /api/login.
"""

import hashlib
import hmac
import secrets

from django.conf import settings
from django.contrib.auth.hashers import check_password
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from audit.services import audit_record
from devices.fields import encrypt_secret
from tenants.models import RecoveryCode, TotpDevice, User

RECOVERY_CODE_COUNT = 10
# 10 characters from a 32-letter alphabet without look-alikes: 50 bits each.
_ALPHABET = "abcdefghjkmnpqrstuvwxyz23456789"
_RECOVERY_LENGTH = 10


class TwoFactorInvalid(Exception):
    """The code was wrong, or codes may not be tried yet. `wait` says for how many
    seconds (0 when the code was just wrong)."""

    def __init__(self, message: str, *, wait: int = 0):
        super().__init__(message)
        self.wait = wait


def _recovery_hash(user: User, code: str) -> str:
    # Keyed by the user and SECRET_KEY: a leaked table is no list of valid codes,
    # and 50 random bits need no slow hash.
    normal = code.strip().lower().replace("-", "").replace(" ", "")
    key = f"{settings.SECRET_KEY}:recovery:{user.code.hex}".encode()
    return hmac.new(key, normal.encode(), hashlib.sha256).hexdigest()


def _new_recovery_codes(user: User) -> list[str]:
    RecoveryCode.objects.filter(user=user).delete()
    codes = []
    for _ in range(RECOVERY_CODE_COUNT):
        raw = "".join(secrets.choice(_ALPHABET) for _ in range(_RECOVERY_LENGTH))
        codes.append(f"{raw[:5]}-{raw[5:]}")
    RecoveryCode.objects.bulk_create(
        [RecoveryCode(user=user, code_hash=_recovery_hash(user, c)) for c in codes]
    )
    return codes


def two_factor_setup(*, user: User) -> TotpDevice:
    """Start enrolment: a new secret, on a device not yet confirmed (replacing any
    earlier unfinished attempt). The confirmed device, if any, stays in use."""
    with transaction.atomic():
        TotpDevice.objects.filter(user=user, confirmed=False).delete()
        device = TotpDevice.objects.create(
            user=user,
            name="Authenticator app",
            confirmed=False,
            key_encrypted=encrypt_secret(secrets.token_hex(20)),
        )
        audit_record(action="two_factor.setup_started", actor=user, target=user)
    return device


def two_factor_confirm(*, user: User, code: str) -> tuple[TotpDevice, list[str]]:
    """Finish enrolment with a first code from the app: the device replaces any
    earlier one, and fresh recovery codes are returned (shown once, stored hashed)."""
    with transaction.atomic():
        device = (
            TotpDevice.objects.select_for_update()
            .filter(user=user, confirmed=False)
            .first()
        )
        if device is None:
            raise ValidationError("Start the set-up again: scan a new QR code.")
        if not device.verify_token(code):
            raise ValidationError(
                "That code is not right. Check the time on your phone and enter "
                "the code the app shows now."
            )
        TotpDevice.objects.filter(user=user, confirmed=True).delete()
        device.confirmed = True
        device.save(update_fields=["confirmed"])
        codes = _new_recovery_codes(user)
        audit_record(action="two_factor.enabled", actor=user, target=user)
    return device, codes


def two_factor_disable(*, user: User, password: str) -> None:
    """Turn two-factor off, with the account password. Refused while a tenant
    requires it of this user's role."""
    from tenants.selectors import two_factor_required_by

    if not check_password(password, user.password):
        raise ValidationError({"password": "The password is not right."})
    required = two_factor_required_by(user=user)
    if required:
        raise ValidationError(
            f"{required[0].name} requires two-factor authentication of its owners "
            "and admins, so it cannot be turned off."
        )
    with transaction.atomic():
        TotpDevice.objects.filter(user=user).delete()
        RecoveryCode.objects.filter(user=user).delete()
        audit_record(action="two_factor.disabled", actor=user, target=user)


def two_factor_recovery_codes_renew(*, user: User, code: str) -> list[str]:
    """New recovery codes (the old ones stop working), with a current code."""
    # Outside the transaction below: a wrong code must still count as a failure.
    method = two_factor_verify(user=user, code=code, recovery=False)
    with transaction.atomic():
        codes = _new_recovery_codes(user)
        audit_record(
            action="two_factor.recovery_codes_renewed",
            actor=user,
            target=user,
            data={"verified_with": method},
        )
    return codes


def two_factor_verify(*, user: User, code: str, recovery: bool = True) -> str:
    """Check a second factor: a code from the app or (when `recovery`) an unused
    recovery code, which is then used up. Returns "totp" or "recovery_code".

    Attempts of one user are serialised on the device row and share its throttle,
    whichever kind of code is tried, so parallel guesses gain nothing. Raises
    TwoFactorInvalid; failures are written to the trail.
    """
    outcome = ""
    wait = 0
    with transaction.atomic():
        device = (
            TotpDevice.objects.select_for_update()
            .filter(user=user, confirmed=True)
            .first()
        )
        if device is None:
            raise TwoFactorInvalid("Two-factor authentication is not set up.")
        allowed, info = device.verify_is_allowed()
        if not allowed:
            until = (info or {}).get("locked_until") or timezone.now()
            wait = max(1, int((until - timezone.now()).total_seconds() + 0.999))
        else:
            compact = (code or "").strip().replace(" ", "")
            if compact.isdigit() and len(compact) == TotpDevice.DIGITS:
                if device.verify_token(compact):
                    outcome = "totp"
            elif recovery and compact:
                used = RecoveryCode.objects.filter(
                    user=user,
                    code_hash=_recovery_hash(user, compact),
                    used_at__isnull=True,
                ).update(used_at=timezone.now())
                if used:
                    device.throttle_reset()
                    outcome = "recovery_code"
                else:
                    device.throttle_increment()
            else:
                device.throttle_increment()
            if outcome == "recovery_code":
                left = RecoveryCode.objects.filter(
                    user=user, used_at__isnull=True
                ).count()
                audit_record(
                    action="two_factor.recovery_code_used",
                    actor=user,
                    target=user,
                    data={"left": left},
                )
    if outcome:
        return outcome
    audit_record(
        action="login.failed",
        actor=user,
        actor_label=user.email,
        data={"reason": "second factor throttled" if wait else "bad second factor"},
    )
    if wait:
        raise TwoFactorInvalid(
            f"Too many wrong codes: wait {wait} seconds, then try again.", wait=wait
        )
    raise TwoFactorInvalid("That code is not right.")
