"""The OTA room: devices ask for chunks (`ota/get`) and report (`ota/status`); the
bridge answers chunks (`ota/chunk`, binary) and offers manifests (`ota/offer`).
See docs/protocol.md, "Over-the-air updates".

Chunks are served from the worker thread, which also handles telemetry, so they are
rationed: a token bucket for all devices (settings.OTA_CHUNKS_PER_S) and one per
device (OTA_DEVICE_CHUNKS_PER_S), at most PER_CALL chunks each time the worker comes
by. What is not served yet waits (the newest request per device), devices taking
turns; the device asks again if a chunk is lost. Which device may have which
release is looked up once per AUTH_TTL seconds, not per chunk.
"""

import collections
import json
import logging
import struct
import time

from django.conf import settings

from devices.bridge.rooms import Context, Message, Outbox, Room

logger = logging.getLogger(__name__)
HEADER = struct.Struct(">II")  # campaign id, chunk index
MAX_WINDOW = 4  # chunks one request may ask for
PER_CALL = 32  # chunks served per worker pass at most (telemetry waits meanwhile)
MAX_WAITING = 10000  # devices with a request waiting; beyond, the oldest is dropped
AUTH_TTL = 5.0
CACHE_CHUNKS = 256
REOFFER_S = 60


class _Bucket:
    __slots__ = ("tokens", "at")

    def __init__(self, tokens: float, at: float) -> None:
        self.tokens, self.at = tokens, at

    def take(self, now: float, rate: float, cap: float) -> bool:
        self.tokens = min(cap, self.tokens + (now - self.at) * rate)
        self.at = now
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        return False


class OtaRoom(Room):
    name = "ota"
    suffixes = ("ota/get", "ota/status")
    device_subscriptions = ("ota/offer", "ota/chunk")

    def __init__(self, clock=time.monotonic) -> None:
        self.clock = clock
        self.rate = float(getattr(settings, "OTA_CHUNKS_PER_S", 200))
        self.device_rate = float(getattr(settings, "OTA_DEVICE_CHUNKS_PER_S", 16))
        # device pk -> [broker id, topic root, campaign, next index, end index]
        self.wants: collections.OrderedDict = collections.OrderedDict()
        self.reports: list[dict] = []
        self.offered: dict[int, float] = {}
        self.chunks_sent = 0
        self.deferred = 0
        now = clock()
        self.total = _Bucket(min(self.rate, PER_CALL), now)
        self.buckets: dict[int, _Bucket] = {}
        self._auth: dict[tuple[int, int], tuple[float, object]] = {}
        self._cache: collections.OrderedDict = collections.OrderedDict()
        # OTA bytes served per tenant, for billing.metering (handed over each second)
        self._tenant: dict[int, int] = {}
        self.metered: collections.Counter = collections.Counter()
        self._metered_at = now

    def handle(self, message: Message, ctx: Context) -> bool:
        try:
            body = json.loads(message.payload)
            campaign = int(body["c"])
            if message.suffix == "ota/get":
                index = int(body.get("i", 0))
                n = max(1, min(MAX_WINDOW, int(body.get("n", 1))))
        except (ValueError, KeyError, TypeError, AttributeError):
            ctx.counters["ota:malformed"] += 1
            return False
        pk = message.device.pk
        if message.suffix == "ota/get":
            root = message.topic[: -len(message.suffix)]
            # The newest request of a device replaces the one still waiting.
            self.wants.pop(pk, None)
            self.wants[pk] = [message.broker_id, root, campaign, index, index + n]
            while len(self.wants) > MAX_WAITING:
                self.wants.popitem(last=False)
        else:
            self.reports.append(
                {
                    "device_pk": pk,
                    "campaign_id": campaign,
                    "state": str(body.get("state", ""))[:20],
                    "percent": body.get("percent", 0) or 0,
                    "reason": str(body.get("reason", ""))[:200],
                    "version": str(body.get("version", ""))[:40],
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

    def _release(self, device_pk: int, campaign_id: int, now: float):
        """The release a device may download in a campaign (its active update in a
        running campaign), or None; cached for AUTH_TTL seconds."""
        from ota.models import DeviceUpdate

        key = (device_pk, campaign_id)
        hit = self._auth.get(key)
        if hit is not None and now - hit[0] < AUTH_TTL:
            return hit[1]
        update = (
            DeviceUpdate.objects.select_related("campaign__release")
            .filter(
                campaign_id=campaign_id,
                device_id=device_pk,
                campaign__state="running",
                state__in=DeviceUpdate.ACTIVE,
            )
            .first()
        )
        release = update.campaign.release if update is not None else None
        if update is not None:
            self._tenant[device_pk] = update.tenant_id
        if len(self._auth) > 4 * MAX_WAITING:
            self._auth.clear()
        self._auth[key] = (now, release)
        return release

    def _chunk(self, release, index: int) -> bytes:
        key = (release.pk, index)
        data = self._cache.get(key)
        if data is None:
            with release.file.open("rb") as f:
                f.seek(index * release.chunk_size)
                data = f.read(release.chunk_size)
            self._cache[key] = data
            while len(self._cache) > CACHE_CHUNKS:
                self._cache.popitem(last=False)
        else:
            self._cache.move_to_end(key)
        return data

    def updates(self, out: Outbox) -> None:
        """Serve waiting chunk requests within the budgets, devices taking turns."""
        if not self.wants:
            return
        now = self.clock()
        served = 0
        for _ in range(len(self.wants)):
            if served >= PER_CALL or not self.wants:
                break
            pk, want = self.wants.popitem(last=False)
            broker_id, root, campaign_id, index, end = want
            release = self._release(pk, campaign_id, now)
            if release is None:  # not this device's campaign (or another tenant's)
                out.counters["ota:refused"] += 1
                continue
            end = min(end, release.chunk_count)
            bucket = self.buckets.get(pk)
            if bucket is None:
                bucket = self.buckets[pk] = _Bucket(MAX_WINDOW, now)
            while index < end and served < PER_CALL:
                if not bucket.take(now, self.device_rate, MAX_WINDOW):
                    break
                if not self.total.take(now, self.rate, min(self.rate, PER_CALL)):
                    bucket.tokens += 1  # not this device's fault: give it back
                    break
                payload = HEADER.pack(campaign_id, index) + self._chunk(release, index)
                if out.publish(broker_id, f"{root}ota/chunk", payload, qos=0):
                    self.chunks_sent += 1
                    self.metered[self._tenant.get(pk)] += len(payload)
                served += 1
                index += 1
            if index < end:
                want[3] = index
                self.wants[pk] = want  # back of the line
                self.deferred += 1
        if self.metered and now - self._metered_at >= 1.0:
            self._meter(now)
        if len(self.buckets) > 4 * MAX_WAITING:
            self.buckets = {pk: b for pk, b in self.buckets.items() if pk in self.wants}

    def _meter(self, now: float) -> None:
        """OTA bytes served per tenant to the usage counters (one round trip)."""
        from billing import metering

        counts, self.metered = self.metered, collections.Counter()
        self._metered_at = now
        metering.add_many(
            {(t, metering.OTA_BYTES): n for t, n in counts.items() if t is not None}
        )

    def publish(self, out: Outbox) -> None:
        """Offer the manifest to every device whose update is offered (again after
        REOFFER_S while it has not answered)."""
        from ota.models import DeviceUpdate
        from ota.services import manifest

        now = time.monotonic()
        offered = DeviceUpdate.objects.filter(
            state="offered", campaign__state="running"
        ).select_related("campaign__release", "device")[:500]
        for update in offered:
            if now - self.offered.get(update.pk, -1e9) < REOFFER_S:
                continue
            payload = json.dumps(manifest(update)).encode()
            if out.publish(
                update.device.broker_id,
                f"{update.device.topic_root}/ota/offer",
                payload,
            ):
                self.offered[update.pk] = now

    def stats(self) -> dict[str, int]:
        return {"ota_chunks_sent": self.chunks_sent, "ota_deferred": self.deferred}
