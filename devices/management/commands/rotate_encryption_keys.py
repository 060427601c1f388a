from django.core.management.base import BaseCommand

from devices.fields import SecretDecryptionError
from devices.services.secrets import secrets_rotate


class Command(BaseCommand):
    help = (
        "Re-encrypt every stored secret under the first key of FIELD_ENCRYPTION_KEYS. "
        "Run after putting a new key first; then the old keys can be removed."
    )

    def handle(self, *args, **options):
        try:
            counts = secrets_rotate()
        except SecretDecryptionError as exc:
            self.stderr.write(self.style.ERROR(str(exc)))
            raise SystemExit(1) from None
        for label, count in counts.items():
            self.stdout.write(f"{label}: {count} rows re-encrypted")
        self.stdout.write(self.style.SUCCESS("All secrets are under the newest key."))
