"""How the pages and their live refresh show a campaign and its rows (one shape for
the first render and every refresh)."""

from ota.models import Campaign, DeviceUpdate

# What each button does, in the past tense for the message after it.
ACTIONS = {
    "start": "started",
    "pause": "paused",
    "resume": "resumed",
    "cancel": "cancelled",
}
# Which buttons a campaign in each state shows.
STATE_ACTIONS = {
    "draft": ["start", "cancel"],
    "running": ["pause", "cancel"],
    "paused": ["resume", "cancel"],
}
FAILED = ("failed", "rolled_back", "timed_out")


def state_choices() -> list[tuple[str, str]]:
    return list(DeviceUpdate.State.choices)


def counts_for(campaign: Campaign, raw: dict[str, int] | None = None) -> dict[str, int]:
    """Every per-device state with its count (zeros included, in the model's
    order), from the engine's selector (or counts read already for a list)."""
    from ota.selectors import campaign_counts

    raw = dict(campaign_counts(campaign) if raw is None else raw)
    counts = {state: int(raw.get(state, 0)) for state, _ in state_choices()}
    for state, n in raw.items():
        counts.setdefault(state, int(n))
    counts["total"] = sum(n for s, n in counts.items() if s != "total")
    return counts


def count_rows(counts: dict[str, int]) -> list[tuple[str, str, int]]:
    labels = dict(state_choices())
    return [(s, labels.get(s, s), n) for s, n in counts.items() if s != "total"]


def abort_status(campaign: Campaign, counts: dict[str, int]) -> dict:
    """The abort threshold and where the campaign stands against it."""
    failed = sum(counts.get(s, 0) for s in FAILED)
    done = failed + counts.get("succeeded", 0)
    share = failed / done if done else 0.0
    return {
        "aborted": campaign.state == "aborted",
        "failed": failed,
        "done": done,
        "share_percent": round(share * 100),
        "threshold_percent": round(campaign.abort_ratio * 100),
        "after": campaign.abort_after,
        "armed": done >= campaign.abort_after,
    }


def actions_for(campaign: Campaign) -> list[str]:
    return STATE_ACTIONS.get(campaign.state, [])


def update_as_dict(update: DeviceUpdate) -> dict:
    device = update.device
    return {
        "device": device.code.hex,
        "device_id": device.device_id,
        "pool": device.pool.name if device.pool_id and device.pool else "",
        "state": update.state,
        "label": update.get_state_display(),
        "percent": update.percent,
        "reason": update.reason,
        "corrupted_chunks": update.corrupted_chunks,
        "attempts": update.attempts,
        "updated_at": update.updated_at.isoformat() if update.updated_at else None,
    }
