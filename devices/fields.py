"""Encrypted fields that fail loudly, and decrypt only when the secret is used.

django-encrypted-model-fields returns the ciphertext as if it were the value when no key
decrypts it, builds its keys once at import, and decrypts every value as its row loads.
These subclasses read the keys from settings on use (so rotation and tests see the
current list), raise SecretDecryptionError instead of handing back ciphertext, and
keep a loaded value sealed (the token, in a Sealed) until code reads the attribute:
a page or API call that loads device rows but never uses their passwords decrypts
nothing, and a stale key breaks only the code that needs the secret. Saving a row
whose secret was never read writes the stored token back as it is.

An empty value is stored as an empty string, not as a token: whether a secret is set
can be told without decrypting it (secret_is_set).
"""

from functools import lru_cache

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import models
from django.db.models.query_utils import DeferredAttribute
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


class Sealed:
    """A stored token not yet decrypted; repr never shows it."""

    __slots__ = ("token", "label")

    def __init__(self, token: str, label: str):
        self.token, self.label = token, label

    def open(self) -> str:
        return decrypt_secret(self.token, label=self.label)

    def __repr__(self) -> str:
        return f"<sealed {self.label}>"


class SealedAttribute(DeferredAttribute):
    """Decrypts on first read of the attribute, then keeps the plaintext.

    A data descriptor (it has __set__), so that reads come here even when the value
    sits in the instance's __dict__."""

    def __set__(self, instance, value):
        instance.__dict__[self.field.attname] = value

    def __get__(self, instance, cls=None):
        if instance is None:
            return self
        value = super().__get__(instance, cls)
        if isinstance(value, Sealed):
            value = value.open()
            instance.__dict__[self.field.attname] = value
        return value


def secret_is_set(instance, name: str) -> bool:
    """Whether the instance holds a non-empty secret, without decrypting it.

    A deferred secret is loaded (still sealed) for the question."""
    if name not in instance.__dict__:
        instance.refresh_from_db(fields=[name])
    value = instance.__dict__[name]
    return bool(value.token if isinstance(value, Sealed) else value)


class StrictEncryptedMixin:
    descriptor_class = SealedAttribute

    def to_python(self, value):
        # Values reaching to_python come from forms and code: they are plaintext.
        if isinstance(value, bytes):
            value = value.decode("utf-8")
        # Skip the library's to_python, which would try to decrypt user input.
        return super(EncryptedMixin, self).to_python(value)

    def from_db_value(self, value, expression, connection):
        if not value:
            return value
        return Sealed(value, f"{self.model.__name__}.{self.name}")

    def pre_save(self, model_instance, add):
        # Not through the attribute: that would decrypt a secret nobody changed.
        return model_instance.__dict__.get(self.attname)

    def get_db_prep_save(self, value, connection):
        if isinstance(value, Sealed):
            return value.token
        if value is None or value == "" or isinstance(value, StoredToken):
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
