"""The alerts services, by concern (STYLE.md: a module past ~500 lines becomes a
package). Callers import from `alerts.services`; the names below are its surface."""

from alerts.services.conditions import (
    DAY_KINDS,
    condition,
    device_day_runtime_h,
    device_day_step,
)
from alerts.services.deliveries import (
    alert_email,
    alert_payload,
    alert_recipients,
    alerts_release_held,
)
from alerts.services.evaluation import _rules_by_pool, alerts_evaluate
from alerts.services.preferences import (
    alert_preference_set,
    preference_wants,
    quiet_until,
)
from alerts.services.rules import (
    MAX_HYSTERESIS,
    MAX_RENOTIFY_MINUTES,
    RULE_LIMITS,
    alert_rule_create,
    alert_rule_delete,
    alert_rule_set,
    alert_rule_update,
    alert_rule_validate,
)
from alerts.services.transitions import (
    Transition,
    alert_acknowledge,
    alert_acknowledge_by_member,
    alert_broadcast,
    alert_fire,
    alert_renotify,
    alert_resolve,
    alert_resolve_by_member,
)
from alerts.services.webhooks import (
    WEBHOOK_SECRET_MAX,
    WEBHOOK_SECRET_MIN,
    webhook_backoff,
    webhook_create,
    webhook_delete,
    webhook_post,
    webhook_secret_validate,
    webhook_sign,
    webhook_subscribe,
    webhook_update,
    webhook_url_validate,
    webhook_verify,
)

__all__ = [
    "DAY_KINDS",
    "MAX_HYSTERESIS",
    "MAX_RENOTIFY_MINUTES",
    "RULE_LIMITS",
    "Transition",
    "WEBHOOK_SECRET_MAX",
    "WEBHOOK_SECRET_MIN",
    "_rules_by_pool",
    "alert_acknowledge",
    "alert_acknowledge_by_member",
    "alert_broadcast",
    "alert_email",
    "alert_fire",
    "alert_payload",
    "alert_preference_set",
    "alert_recipients",
    "alert_renotify",
    "alert_resolve",
    "alert_resolve_by_member",
    "alert_rule_create",
    "alert_rule_delete",
    "alert_rule_set",
    "alert_rule_update",
    "alert_rule_validate",
    "alerts_evaluate",
    "alerts_release_held",
    "condition",
    "device_day_runtime_h",
    "device_day_step",
    "preference_wants",
    "quiet_until",
    "webhook_backoff",
    "webhook_create",
    "webhook_delete",
    "webhook_post",
    "webhook_secret_validate",
    "webhook_sign",
    "webhook_subscribe",
    "webhook_update",
    "webhook_url_validate",
    "webhook_verify",
]
