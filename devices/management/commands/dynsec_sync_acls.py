from django.core.management.base import BaseCommand, CommandError

from devices.models import Device
from devices.services import dynsec


class Command(BaseCommand):
    help = (
        "Bring every platform-broker device's role to the ACL this release gives "
        "(after an upgrade that adds device topics, such as OTA's); idempotent."
    )

    def handle(self, *args, **options):
        if not dynsec.dynsec_enabled():
            raise CommandError("MQTT_DYNSEC_ENABLED is off: no roles to sync.")
        devices = Device.objects.filter(broker__is_platform=True).values_list(
            "device_id", "topic_prefix"
        )
        try:
            changed = dynsec.dynsec_devices_sync_acls(devices=list(devices))
        except dynsec.DynsecError as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(f"{len(changed)} device role(s) brought up to date.")
