"""The OTA pages: releases (ota/views/releases.py), campaigns with their preview and
live progress (campaigns.py), a device's history and a pool's consent (devices.py).
Views parse, authorise through ota.access, call one engine service and answer."""
