"""Releases (upload, retire) and the manifest a device authenticates."""

import hashlib
import hmac
import json

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone
from django.utils.crypto import salted_hmac

from audit.services import audit_record
from ota.models import MAX_CHUNK, SUM_BYTES, DeviceUpdate, Release

MAX_SIZE = 1024 * 1024  # docs/protocol.md: a bundle is at most 1 MB


class _ChunkSums:
    """Each chunk's digest, fed pieces of any length (upload pieces need not fall
    on chunk boundaries)."""

    def __init__(self, chunk_size: int) -> None:
        self.chunk_size = chunk_size
        self.sums: list[str] = []
        self.current = hashlib.sha256()
        self.filled = 0

    def update(self, piece: bytes) -> None:
        view = memoryview(piece)
        while view:
            take = min(len(view), self.chunk_size - self.filled)
            self.current.update(view[:take])
            self.filled += take
            view = view[take:]
            if self.filled == self.chunk_size:
                self._close()

    def _close(self) -> None:
        self.sums.append(self.current.digest()[:SUM_BYTES].hex())
        self.current, self.filled = hashlib.sha256(), 0

    def hexdigest(self) -> str:
        if self.filled:
            self._close()
        return "".join(self.sums)


def release_create(
    *,
    upload,
    version: str,
    hardware_model: str,
    min_from_version: str = "",
    notes: str = "",
    tenant=None,
    actor=None,
) -> Release:
    """Hash, size and chunk-sum the upload in 64 KB pieces (never wholly in memory),
    then stream it to storage. `tenant`: a tenant's own release (None: the platform's,
    offered to every tenant). Bad input raises ValidationError, nothing stored."""
    digest = hashlib.sha256()
    sums = _ChunkSums(MAX_CHUNK)
    size = 0
    for piece in upload.chunks(64 * 1024):
        digest.update(piece)
        sums.update(piece)
        size += len(piece)
    if size == 0:
        raise ValidationError({"upload": "The file is empty."})
    if size > MAX_SIZE:
        raise ValidationError({"upload": f"A release is at most {MAX_SIZE} bytes."})
    upload.seek(0)
    release = Release(
        tenant=tenant,
        version=version,
        hardware_model=hardware_model,
        min_from_version=min_from_version,
        notes=notes,
        sha256=digest.hexdigest(),
        size=size,
        chunk_size=MAX_CHUNK,
        chunk_count=-(-size // MAX_CHUNK),
        chunk_sums=sums.hexdigest(),
        created_by=actor if actor is not None and actor.pk else None,
    )
    release.full_clean(exclude=["file", "sha256"])
    with transaction.atomic():
        release.file.save("release.bin", upload, save=False)
        release.save()
        audit_record(
            action="ota.release_create",
            tenant=tenant,
            actor=actor,
            target=release,
            data={"release": str(release), "sha256": release.sha256, "size": size},
        )
    return release


def release_retire(*, actor, release: Release) -> Release:
    """A retired release is offered to no new campaign (running ones go on)."""
    n = Release.objects.filter(pk=release.pk, retired=False).update(
        retired=True, retired_at=timezone.now()
    )
    release.refresh_from_db()
    if n:
        audit_record(
            action="ota.release_retire",
            tenant=release.tenant,
            actor=actor,
            target=release,
            data={"release": str(release)},
        )
    return release


def device_ota_key(device_id: str) -> bytes:
    """The device's manifest key: derived from the OTA secret (settings.OTA_SECRET)
    and the device id, so it is never stored; handed to the device in its
    provisioning bundle ("ota_key", hex)."""
    secret = settings.OTA_SECRET or None  # None: SECRET_KEY (development)
    return salted_hmac(
        "poolsaas.ota.device", device_id, secret=secret, algorithm="sha256"
    ).digest()


def _mac(key: bytes, body: dict) -> str:
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
    return hmac.new(key, canonical, hashlib.sha256).hexdigest()


def manifest(update: DeviceUpdate) -> dict:
    """The offer: the release's fields and their HMAC with the device's key; with
    each chunk's digest ("sums") and their HMAC ("smac", over the fields and the
    sums) when the release has them. "hmac" covers the fields without the sums, so
    a device older than the sums still takes the update (docs/protocol.md 10)."""
    release = update.campaign.release
    body = {
        "c": update.campaign_id,
        "version": release.version,
        "from": release.min_from_version,
        "model": release.hardware_model,
        "size": release.size,
        "sha256": release.sha256,
        "chunk": release.chunk_size,
        "chunks": release.chunk_count,
    }
    key = device_ota_key(update.device.device_id)
    mac = _mac(key, body)
    if release.chunk_sums:
        body["sums"] = release.chunk_sums
        body["smac"] = _mac(key, body)
    body["hmac"] = mac
    return body
