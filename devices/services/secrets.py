"""Key rotation for every encrypted secret."""

from django.apps import apps
from django.db import transaction

from audit.services import audit_record
from devices.fields import StrictEncryptedMixin


def _encrypted_models():
    for model in apps.get_models():
        names = [
            f.name
            for f in model._meta.concrete_fields
            if isinstance(f, StrictEncryptedMixin)
        ]
        if names:
            yield model, names


def secrets_rotate(*, actor=None, batch_size: int = 500) -> dict[str, int]:
    """Re-encrypt every stored secret under the first key of FIELD_ENCRYPTION_KEYS.

    Reading decrypts with any configured key (and raises if none fits), saving encrypts
    with the first. Returns how many rows of each model were rewritten.
    """
    counts: dict[str, int] = {}
    for model, names in _encrypted_models():
        count = 0
        with transaction.atomic():
            for obj in (
                model.objects.select_for_update()
                .order_by("pk")
                .iterator(chunk_size=batch_size)
            ):
                obj.save(update_fields=names)
                count += 1
        counts[model._meta.label] = count
    audit_record(action="encryption_keys.rotated", actor=actor, data={"rows": counts})
    return counts
