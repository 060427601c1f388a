"""Encrypted fields that fail loudly.

django-encrypted-model-fields returns the ciphertext as if it were the value when no key
decrypts it, and builds its keys once at import. These subclasses read the keys from
settings on use (so rotation and tests see the current list) and raise
SecretDecryptionError instead of handing back ciphertext.
"""

from functools import lru_cache

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import models
from encrypted_model_fields.fields import (
    EncryptedCharField,
    EncryptedMixin,
    EncryptedTextField,
)


class SecretDecryptionError(RuntimeError):
    """A stored secret could not be decrypted with any configured key."""


@lru_cache(maxsize=4)
def _crypter_for(keys: tuple[str, ...]) -> MultiFernet:
    if not keys:
        raise ImproperlyConfigured("FIELD_ENCRYPTION_KEYS is empty.")
    try:
        return MultiFernet([Fernet(key) for key in keys])
    except (ValueError, TypeError) as exc:
        raise ImproperlyConfigured(f"FIELD_ENCRYPTION_KEYS is invalid: {exc}") from None


def crypter() -> MultiFernet:
    keys = settings.FIELD_ENCRYPTION_KEY
    if isinstance(keys, str):
        keys = [keys]
    return _crypter_for(tuple(keys))


def encrypt_secret(plaintext: str) -> str:
    return crypter().encrypt(plaintext.encode("utf-8")).decode("ascii")


def decrypt_secret(token: str, *, label: str = "secret") -> str:
    try:
        return crypter().decrypt(token.encode("ascii")).decode("utf-8")
    except (InvalidToken, UnicodeError):
        # Never include the token itself: the message may end up in a log.
        raise SecretDecryptionError(
            f"The stored {label} cannot be decrypted with any key in "
            "FIELD_ENCRYPTION_KEYS. Restore the key that encrypted it."
        ) from None


class StoredToken(models.Value):
    """An already-encrypted token, written to an encrypted column as it is.

    Only key rotation needs this; everything else assigns plaintext."""

    def __init__(self, token: str):
        super().__init__(token, output_field=models.TextField())


class StrictEncryptedMixin:
    def to_python(self, value):
        # Values reaching to_python come from forms and code: they are plaintext.
        if isinstance(value, bytes):
            value = value.decode("utf-8")
        # Skip the library's to_python, which would try to decrypt user input.
        return super(EncryptedMixin, self).to_python(value)

    def from_db_value(self, value, expression, connection):
        if value is None:
            return None
        return decrypt_secret(value, label=f"{self.model.__name__}.{self.name}")

    def get_db_prep_save(self, value, connection):
        if value is None or isinstance(value, StoredToken):
            return value
        if hasattr(value, "as_sql"):
            # Django hands update() expressions here too; encrypting their repr
            # would store garbage, passing them on could store plaintext.
            raise TypeError(
                f"{self.model.__name__}.{self.name} takes a plain value, not a "
                "database expression."
            )
        return encrypt_secret(str(value))


class StrictEncryptedCharField(StrictEncryptedMixin, EncryptedCharField):
    pass


class StrictEncryptedTextField(StrictEncryptedMixin, EncryptedTextField):
    pass
