"""Key rotation for every encrypted secret."""

from cryptography.fernet import InvalidToken
from django.apps import apps
from django.db import models, transaction
from django.db.models.functions import Cast

from audit.services import audit_record
from devices.fields import (
    SecretDecryptionError,
    StoredToken,
    StrictEncryptedMixin,
    crypter,
)


def _encrypted_models():
    for model in apps.get_models():
        names = [
            f.name
            for f in model._meta.concrete_fields
            if isinstance(f, StrictEncryptedMixin)
        ]
        if names:
            yield model, names


def _row_label(model, pk, code) -> str:
    return f"{model._meta.label} #{pk}" + (f" ({code})" if code else "")


def secrets_rotate(*, actor=None) -> dict[str, int]:
    """Re-encrypt every stored secret under the first key of FIELD_ENCRYPTION_KEYS.

    Works on the stored tokens (Fernet rotate), so no plaintext is held longer than
    the library needs and no auto_now field or save hook fires. All or nothing: if
    any token decrypts with none of the keys, SecretDecryptionError names the row
    and nothing is rewritten. Returns how many rows of each model were rewritten.
    """
    fernet = crypter()
    counts: dict[str, int] = {}
    with transaction.atomic():
        for model, names in _encrypted_models():
            # Cast to text reads the raw token, skipping the field's decryption.
            raw = {f"raw_{name}": Cast(name, models.TextField()) for name in names}
            has_code = any(f.name == "code" for f in model._meta.concrete_fields)
            columns = ["pk", *raw] + (["code"] if has_code else [])
            rows = (
                model.objects.select_for_update()
                .annotate(**raw)
                .order_by("pk")
                .values(*columns)
            )
            count = 0
            # Listed first: rows are small, and updating while a cursor is open
            # over the same table is not portable.
            for row in list(rows):
                updates = {}
                for name in names:
                    token = row[f"raw_{name}"]
                    if not token:  # None or "" (an empty secret is no token)
                        continue
                    try:
                        new = fernet.rotate(token.encode("ascii")).decode("ascii")
                    except (InvalidToken, UnicodeError):
                        raise SecretDecryptionError(
                            f"{_row_label(model, row['pk'], row.get('code'))}: "
                            f"the stored {name} cannot be decrypted with any key in "
                            "FIELD_ENCRYPTION_KEYS. Add the key that encrypted it "
                            "and run the rotation again; nothing was changed."
                        ) from None
                    # A bare string would be encrypted a second time.
                    updates[name] = StoredToken(new)
                if updates:
                    model.objects.filter(pk=row["pk"]).update(**updates)
                    count += 1
            counts[model._meta.label] = count
        audit_record(
            action="encryption_keys.rotated",
            actor=actor,
            data={"rows": counts},
        )
    return counts
