"""The OTA room: devices ask for chunks (`ota/get`) and report (`ota/status`); the
bridge answers chunks (`ota/chunk`, binary) and offers manifests (`ota/offer`).
See docs/protocol.md, "Over-the-air updates".

Chunks are served from the worker thread, which also handles telemetry, so they are
rationed: a token bucket for all devices (settings.OTA_CHUNKS_PER_S) and one per
device (OTA_DEVICE_CHUNKS_PER_S), at most PER_CALL chunks each time the worker comes
by. What is not served yet waits (the newest request per device), devices taking
turns; the device asks again if a chunk is lost. Which device may have which
release is looked up once per AUTH_TTL seconds, not per chunk.

The chunks of a release being served are read from storage once per bridge, in
chunk-size pieces (never the whole file in one read, never per request), and kept
ready to send (header included) for as long as the release is in use, within
CACHE_BYTES; a release that does not fit is read per chunk through a small cache.
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
CACHE_CHUNKS = 256  # per-chunk cache of releases too large for CACHE_BYTES
CACHE_BYTES = 8 * 1024 * 1024  # releases' chunks held ready to send, in all
REOFFER_S = 60
MAX_CORRUPTED = 10000  # a report's corrupted-chunk count (a device stops at 8)


class _Bucket:
    __slots__ = ("tokens", "at")

    def __init__(self, tokens: float, at: float) -> None:
        self.tokens, self.at = tokens, at

    def ready(self, now: float, rate: float, cap: float) -> bool:
        """Refilled to `now`: is there a token (none is taken)?"""
        self.tokens = min(cap, self.tokens + (now - self.at) * rate)
        self.at = now
        return self.tokens >= 1

    def take(self, now: float, rate: float, cap: float) -> bool:
        if self.ready(now, rate, cap):
            self.tokens -= 1
            return True
        return False


def coalesced(reports: list[dict]) -> list[dict]:
    """The reports of a batch, in order, without a `downloading` one that a later
    report of the same device and campaign supersedes: a progress report says only
    how far the device is, and the newest says it better (its corrupted-chunk count
    is carried into the newer report when that one has none). Every other state is
    kept (each is a step of the update, shown and counted); a state the service
    does not take supersedes nothing. At the bench's pace a device reported 20
    times a second while it downloaded, each report two queries."""
    from ota.services.reports import REPORTABLE

    later: dict[tuple, dict] = {}
    kept = []
    for report in reversed(reports):
        key = (report["device_pk"], report["campaign_id"])
        newer = later.get(key)
        if report["state"] == "downloading" and newer is not None:
            if "corrupted" in report:
                newer.setdefault("corrupted", report["corrupted"])
            continue
        if report["state"] in REPORTABLE:
            later[key] = report
        kept.append(report)
    kept.reverse()
    return kept


def _count_ok(value) -> bool:
    return type(value) is int and 0 <= value <= MAX_CORRUPTED


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
        # 0: no limit in all (only the per-device one and PER_CALL).
        self.total_cap = min(self.rate, PER_CALL) if self.rate else PER_CALL
        self.total = _Bucket(self.total_cap, now)
        self.buckets: dict[int, _Bucket] = {}
        self._auth: dict[tuple[int, int], tuple[float, object]] = {}
        # campaign -> (when, its release, the devices with an active update, tenant)
        self._campaigns: dict[int, tuple] = {}
        self._cache: collections.OrderedDict = collections.OrderedDict()
        # (campaign, release) -> the payloads of every chunk, header included.
        self._payloads: collections.OrderedDict = collections.OrderedDict()
        self._payload_bytes = 0
        self.storage_reads = 0
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
            report = {
                "device_pk": pk,
                "campaign_id": campaign,
                "state": str(body.get("state", ""))[:20],
                "percent": body.get("percent", 0) or 0,
                "reason": str(body.get("reason", ""))[:200],
                "version": str(body.get("version", ""))[:40],
            }
            corrupted = body.get("corrupted")
            if corrupted is not None:
                if _count_ok(corrupted):
                    report["corrupted"] = corrupted
                else:  # the report stands; the stored count does not change
                    ctx.counters["ota:bad_corrupted"] += 1
                    logger.warning(
                        "ota: a corrupted-chunk count that is not one on %s: %.40r",
                        message.topic,
                        corrupted,
                    )
            self.reports.append(report)
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

        for report in coalesced(batch):
            device_update_report(**report)

    def _release(self, device_pk: int, campaign_id: int, now: float):
        """The release a device may download in a campaign (its active update in a
        running campaign), or None; cached for AUTH_TTL seconds."""
        from ota.models import DeviceUpdate

        known = self._campaign(campaign_id, now)
        if known is not None and device_pk in known[2]:
            self._tenant[device_pk] = known[3]
            return known[1]
        key = (device_pk, campaign_id)
        hit = self._auth.get(key)
        if hit is not None and now - hit[0] < AUTH_TTL:
            return hit[1]
        # Not among the campaign's active devices a moment ago (offered since, or
        # not this campaign's at all): asked for on its own.
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

    def _campaign(self, campaign_id: int, now: float):
        """(when, release, device pks with an active update, tenant) of a running
        campaign,
        one query per AUTH_TTL seconds for all its devices; None if not running."""
        from ota.models import Campaign, DeviceUpdate

        hit = self._campaigns.get(campaign_id)
        if hit is not None and now - hit[0] < AUTH_TTL:
            return hit
        campaign = (
            Campaign.objects.select_related("release")
            .filter(pk=campaign_id, state="running")
            .first()
        )
        if campaign is None:
            found = (now, None, frozenset(), None)
        else:
            pks = DeviceUpdate.objects.filter(
                campaign_id=campaign_id, state__in=DeviceUpdate.ACTIVE
            ).values_list("device_id", flat=True)
            found = (now, campaign.release, frozenset(pks), campaign.tenant_id)
        if len(self._campaigns) > 1000:
            self._campaigns.clear()
        self._campaigns[campaign_id] = found
        return found

    def _payloads_of(self, campaign_id: int, release) -> list | None:
        """Every chunk of the release ready to send in this campaign: read from
        storage the first time (chunk by chunk), then from memory. None when the
        release is larger than CACHE_BYTES."""
        key = (campaign_id, release.pk)
        found = self._payloads.get(key)
        if found is not None:
            self._payloads.move_to_end(key)
            return found
        if release.size > CACHE_BYTES:
            return None
        payloads = []
        with release.file.open("rb") as f:
            for index in range(release.chunk_count):
                data = f.read(release.chunk_size)
                payloads.append(HEADER.pack(campaign_id, index) + data)
        self.storage_reads += 1
        self._payloads[key] = payloads
        self._payload_bytes += release.size
        while self._payload_bytes > CACHE_BYTES and len(self._payloads) > 1:
            (_, pk), old = self._payloads.popitem(last=False)
            self._payload_bytes -= sum(len(p) - HEADER.size for p in old)
        return payloads

    def _payload(self, campaign_id: int, release, index: int) -> bytes:
        payloads = self._payloads_of(campaign_id, release)
        if payloads is not None:
            return payloads[index]
        return HEADER.pack(campaign_id, index) + self._chunk(release, index)

    def _chunk(self, release, index: int) -> bytes:
        key = (release.pk, index)
        data = self._cache.get(key)
        if data is None:
            with release.file.open("rb") as f:
                f.seek(index * release.chunk_size)
                data = f.read(release.chunk_size)
            self.storage_reads += 1
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
            if self.rate and not self.total.ready(now, self.rate, self.total_cap):
                self.deferred += 1  # the device at the front waits
                break  # nothing left for anyone in this pass
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
                if self.rate and not self.total.take(now, self.rate, self.total_cap):
                    bucket.tokens += 1  # not this device's fault: give it back
                    break
                payload = self._payload(campaign_id, release, index)
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
        return {
            "ota_chunks_sent": self.chunks_sent,
            "ota_deferred": self.deferred,
            "ota_storage_reads": self.storage_reads,
        }
