from django.core.management.base import BaseCommand, CommandError

from devices.models import DEVICE_ID_RE, NATIVE_DEVICE_ID_RE
from devices.services.claims import claim_code_for


class Command(BaseCommand):
    help = (
        "Print the claim code of device ids (the factory's label; for a v3.1 device, "
        "hand it out once its owner has shown they hold the device)."
    )

    def add_arguments(self, parser):
        parser.add_argument("device_ids", nargs="+")

    def handle(self, *args, device_ids, **options):
        for device_id in device_ids:
            if NATIVE_DEVICE_ID_RE.match(device_id.upper()):
                device_id = device_id.upper()  # as device_id_clean stores it
            if not DEVICE_ID_RE.match(device_id):
                raise CommandError(f"{device_id!r} is not a device id.")
            self.stdout.write(f"{device_id} {claim_code_for(device_id)}")
