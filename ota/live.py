"""Live progress of updates: one channel-layer message per change of a device's
state or of its count of corrupted chunks, and per PERCENT_STEP of its progress (a
device reports every 10 %, a bench may report more often), to its tenant's live
group (tenant.<hex>)."""

import threading

from poolsaas.live import groups, messages

PERCENT_STEP = 5
_MAX_REMEMBERED = 50000

# update pk -> (state, percent // PERCENT_STEP, corrupted chunks) last sent here
_sent: dict[int, tuple[str, int, int]] = {}
_lock = threading.Lock()


def broadcast_update(update) -> bool:
    """Send `update` as it is now (after the transaction commits) unless this
    process already sent the same state and progress step. True when sent."""
    corrupted = int(update.corrupted_chunks or 0)
    key = (update.state, int(update.percent) // PERCENT_STEP, corrupted)
    with _lock:
        if _sent.get(update.pk) == key:
            return False
        if len(_sent) > _MAX_REMEMBERED:
            _sent.clear()
        _sent[update.pk] = key
    campaign_code = update.campaign.code if update.campaign_id else None
    groups.broadcast(
        groups.tenant_group(update.tenant.code),
        messages.ota_update(
            campaign=campaign_code.hex if campaign_code else "",
            device=update.device.code.hex,
            state=update.state,
            percent=int(update.percent),
            reason=update.reason,
            corrupted_chunks=corrupted,
        ),
    )
    return True
