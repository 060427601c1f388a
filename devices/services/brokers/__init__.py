"""Writes for brokers: a tenant's own brokers, the shared platform broker, the
connection test and the rotation of a tenant broker's credentials. One function per
state change, used by pages, the API, admin and management commands alike.

Many callers import from here, so the public names are re-exported:

- addresses: host rules, the public-address (SSRF) check, the vetted socket/client;
- validation: the broker's fields as a whole;
- management: create, update, delete, secrets status;
- credentials: staging, promoting and refusing new credentials (rotation);
- platform: the platform broker's row;
- connection_test: the "Test connection" button.
"""

from devices.services.brokers.addresses import (
    BrokerAddressRefused,
    VettedClient,
    broker_resolve,
    broker_socket,
    validate_broker_address,
    validate_broker_host,
)
from devices.services.brokers.connection_test import (
    ConnectionResult,
    broker_test_connection,
)
from devices.services.brokers.credentials import (
    broker_credentials_cancel,
    broker_credentials_promote,
    broker_credentials_refused,
    broker_credentials_stage,
    broker_credentials_state,
)
from devices.services.brokers.management import (
    ADDRESS_FIELDS,
    broker_create,
    broker_delete,
    broker_secrets_status,
    broker_update,
    secrets_required_for_address_change,
)
from devices.services.brokers.platform import broker_ensure_platform
from devices.services.brokers.validation import (
    BROKER_FIELDS,
    validate_ca_certificate,
    validate_websocket_url,
)

__all__ = [
    "ADDRESS_FIELDS",
    "BROKER_FIELDS",
    "BrokerAddressRefused",
    "ConnectionResult",
    "VettedClient",
    "broker_create",
    "broker_credentials_cancel",
    "broker_credentials_promote",
    "broker_credentials_refused",
    "broker_credentials_stage",
    "broker_credentials_state",
    "broker_delete",
    "broker_ensure_platform",
    "broker_resolve",
    "broker_secrets_status",
    "broker_socket",
    "broker_test_connection",
    "broker_update",
    "secrets_required_for_address_change",
    "validate_broker_address",
    "validate_broker_host",
    "validate_ca_certificate",
    "validate_websocket_url",
]
