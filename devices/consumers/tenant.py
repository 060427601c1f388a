"""/ws/tenant/: the pools overview of the socket's tenant, one message per pool
change, and the rows a (re)connecting page asks for."""

from channels.db import database_sync_to_async
from django.utils import timezone

from devices.consumers.base import LiveConsumer
from devices.selectors import pools_live_state
from poolsaas.live import groups as broadcast
from tenants.roles import Action
from tenants.selectors import membership_require


class TenantConsumer(LiveConsumer):
    """The pools overview of the socket's tenant: one message per pool change."""

    def resolve_target(self, membership) -> None:
        membership_require(membership=membership, action=Action.VIEW)
        self.live_group = broadcast.tenant_group(membership.tenant.code)

    async def snapshot(self) -> dict:
        from alerts.selectors import alerts_firing_as_dicts

        return {
            "type": "hello",
            "tenant": self.membership.tenant.code.hex,
            # What is firing now (the alerts app's); changes follow as tenant.alert.
            "alerts": await database_sync_to_async(alerts_firing_as_dicts)(
                membership=self.membership
            ),
            "now": timezone.now().isoformat(),
        }

    async def handle(self, kind, content: dict):
        if kind == "snapshot":
            # The page's pools, as they are now: what a (re)connecting page missed.
            codes = content.get("pools")
            if not isinstance(codes, list):
                await self.send_json(
                    {"type": "error", "message": "Send the pool codes as a list."}
                )
                return
            rows = await database_sync_to_async(pools_live_state)(
                membership=self.membership, codes=[str(c) for c in codes]
            )
            await self.send_json({"type": "pools", "pools": rows})
        else:
            await super().handle(kind, content)

    async def tenant_pool(self, message):
        await self.send_json(
            {
                "type": "pool",
                "pool": message.get("pool"),
                "online": message.get("online"),
                "state": message.get("state") or {},
                "last_seen": message.get("last_seen"),
            }
        )

    async def tenant_alert(self, message):
        # An alert of one of the tenant's pools changed (alerts.services).
        await self.send_json(
            {
                "type": "alert",
                "pool": message.get("pool"),
                "alert": message.get("alert") or {},
            }
        )

    async def ota_update(self, message):
        # A device's update in one of the tenant's campaigns moved (ota.live).
        await self.send_json(
            {
                "type": "ota",
                "update": {
                    "campaign": message.get("campaign"),
                    "device": message.get("device"),
                    "state": message.get("state"),
                    "percent": message.get("percent"),
                    "reason": message.get("reason") or "",
                    "corrupted_chunks": message.get("corrupted_chunks") or 0,
                },
            }
        )
