"""What goes over the channel layer, in one place.

- `groups`: the group names (built from UUID hex only), the bridges' doorbell channel
  and watch group, and the helpers that send (`broadcast`, `broadcast_now`,
  `doorbell_ring_now`, `watch_announce`);
- `messages`: one builder per message type, the only place their dicts are written;
- `watch`: the registry of watched groups (keys we own, with a time to live) that the
  bridge reads to skip broadcasts nobody would receive.
"""
