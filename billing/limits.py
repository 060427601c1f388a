"""The limits a plan sets, by key, with their names in words."""

from dataclasses import dataclass


@dataclass(frozen=True)
class Limit:
    name: str  # as the limit is called in words
    field: str  # Plan field
    unit: str  # what is counted, plural
    monthly: bool = False
    # A rate is enforced by the API throttle, not counted against the plan.
    counted: bool = True


LIMITS = {
    "pools": Limit("pools", "max_pools", "pools"),
    "devices": Limit("devices", "max_devices", "devices"),
    "members": Limit("team members", "max_members", "members"),
    "messages": Limit(
        "device messages per month", "messages_per_month", "messages", True
    ),
    "api_rate": Limit(
        "API requests per minute",
        "api_requests_per_minute",
        "requests per minute",
        counted=False,
    ),
    "ota_campaigns": Limit(
        "OTA campaigns per month", "ota_campaigns_per_month", "campaigns", True
    ),
}


def upgrade_path(plan, limit: str) -> str:
    """The words after a refusal or a warning: the next plan that raises `limit`."""
    field = LIMITS[limit].field
    better = plan.upgrade_to
    # The next plan that actually raises this limit.
    seen = {plan.pk}
    while better is not None and better.pk not in seen:
        if getattr(better, field) > getattr(plan, field):
            return (
                f"Upgrade to {better.name} ({getattr(better, field):,} "
                f"{LIMITS[limit].unit}) on the Billing page, or ask us for more."
            )
        seen.add(better.pk)
        better = better.upgrade_to
    return "Contact us for a custom plan."
