from django.core.management.base import BaseCommand, CommandError

from devices.models import Device
from devices.services import dynsec


class Command(BaseCommand):
    help = (
        "Bind every platform-broker device client to client id = device id (once, "
        "after upgrading from a version that did not)."
    )

    def handle(self, *args, **options):
        if not dynsec.dynsec_enabled():
            raise CommandError("MQTT_DYNSEC_ENABLED is off: nothing to bind.")
        ids = Device.objects.filter(broker__is_platform=True).values_list(
            "device_id", flat=True
        )
        try:
            bound = dynsec.dynsec_devices_bind_client_ids(device_ids=list(ids))
        except dynsec.DynsecError as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(f"{len(bound)} device client(s) bound to their client id.")
