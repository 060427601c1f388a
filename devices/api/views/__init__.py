"""API views of the devices app, one module per resource: brokers, pools (and the
base of the collections under a pool), commands, events, programs and devices. The
pool's history (/pools/{code}/telemetry/) is the telemetry app's (telemetry/api/).

Each view parses, obtains objects through devices.selectors (the access layer), calls
one service and answers.
"""
