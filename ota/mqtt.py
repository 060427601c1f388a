"""The OTA room: devices ask for chunks (`ota/get`) and report (`ota/status`); the
bridge answers chunks (`ota/chunk`, binary) and offers manifests (`ota/offer`).
See docs/protocol.md, "Over-the-air updates"."""

import collections
import json
import logging
import struct

from devices.bridge.rooms import Context, Message, Outbox, Room

logger = logging.getLogger(__name__)
HEADER = struct.Struct(">II")  # campaign id, chunk index
PER_BURST_TOTAL = 64
PER_DEVICE_BURST = 4


class OtaRoom(Room):
    name = "ota"
    suffixes = ("ota/get", "ota/status")

    def __init__(self) -> None:
        self.requests: list[tuple[Message, int, int]] = []
        self.reports: list[dict] = []
        self.offered: dict[int, float] = {}
        self.chunks_sent = 0
        self._cache: collections.OrderedDict = collections.OrderedDict()

    def handle(self, message: Message, ctx: Context) -> bool:
        try:
            body = json.loads(message.payload)
            campaign = int(body["c"])
        except (ValueError, KeyError, TypeError):
            ctx.counters["ota:malformed"] += 1
            return False
        if message.suffix == "ota/get":
            self.requests.append((message, campaign, int(body.get("i", 0))))
        else:
            self.reports.append(
                {
                    "device_pk": message.device.pk,
                    "campaign_id": campaign,
                    "state": str(body.get("state", "")),
                    "percent": body.get("percent", 0) or 0,
                    "reason": str(body.get("reason", "")),
                }
            )
        return True

    def pending(self) -> int:
        return len(self.reports)

    def drain(self):
        batch, self.reports = self.reports, []
        return batch

    def merge(self, held, newer, out):
        return (held + newer)[-10000:]

    def flush(self, batch, out: Outbox) -> None:
        from ota.services import device_update_report

        for report in batch:
            device_update_report(**report)

    def _chunk(self, release, index: int) -> bytes:
        key = (release.pk, index)
        data = self._cache.get(key)
        if data is None:
            with release.file.open("rb") as f:
                f.seek(index * release.chunk_size)
                data = f.read(release.chunk_size)
            self._cache[key] = data
            while len(self._cache) > 256:
                self._cache.popitem(last=False)
        return data

    def updates(self, out: Outbox) -> None:
        """Serve the chunk requests of the burst (a bounded number per device and in
        all; a device asks again for what it did not get)."""
        from ota.models import DeviceUpdate

        requests, self.requests = self.requests[:PER_BURST_TOTAL], []
        per_device: collections.Counter = collections.Counter()
        for message, campaign_id, index in requests:
            device = message.device
            if per_device[device.pk] >= PER_DEVICE_BURST:
                continue
            per_device[device.pk] += 1
            update = (
                DeviceUpdate.objects.select_related("campaign__release", "device")
                .filter(
                    campaign_id=campaign_id,
                    device_id=device.pk,
                    campaign__state="running",
                    state__in=DeviceUpdate.ACTIVE,
                )
                .first()
            )
            if update is None:  # not this device's campaign (or another tenant's)
                out.counters["ota:refused"] += 1
                continue
            release = update.campaign.release
            if not 0 <= index < release.chunk_count:
                continue
            root = update.device.topic_root
            payload = HEADER.pack(campaign_id, index) + self._chunk(release, index)
            if out.publish(message.broker_id, f"{root}/ota/chunk", payload, qos=0):
                self.chunks_sent += 1

    def publish(self, out: Outbox) -> None:
        """Offer the manifest to every device whose update is offered (again after
        a minute while it has not answered)."""
        import time

        from ota.models import DeviceUpdate
        from ota.services import manifest

        now = time.monotonic()
        offered = DeviceUpdate.objects.filter(
            state="offered", campaign__state="running"
        ).select_related("campaign__release", "device")[:500]
        for update in offered:
            if now - self.offered.get(update.pk, -1e9) < 60:
                continue
            payload = json.dumps(manifest(update)).encode()
            if out.publish(
                update.device.broker_id,
                f"{update.device.topic_root}/ota/offer",
                payload,
            ):
                self.offered[update.pk] = now

    def stats(self) -> dict[str, int]:
        return {"ota_chunks_sent": self.chunks_sent}
