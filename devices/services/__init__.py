"""Writes for brokers, pools and devices, one module per area. Import from the module:
`from devices.services.brokers import broker_create`."""
