from django.core.management.base import BaseCommand, CommandError

from devices.fields import SecretDecryptionError
from devices.services.secrets import secrets_rotate


class Command(BaseCommand):
    help = (
        "Re-encrypt every stored secret under the first key of FIELD_ENCRYPTION_KEYS. "
        "Put the new key first and keep the old ones after it; once this has run, "
        "the old keys can be removed."
    )

    def handle(self, *args, **options):
        try:
            counts = secrets_rotate()
        except SecretDecryptionError as exc:
            raise CommandError(str(exc)) from None
        for label, count in counts.items():
            self.stdout.write(f"{label}: {count} rows re-encrypted")
        self.stdout.write(self.style.SUCCESS("All secrets are under the newest key."))
