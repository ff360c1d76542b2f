"""Open311 GeoReport v2 (``api``): services, discovery and service requests for outside clients such as
FixMyStreet. Its settings are part of ``[web]`` (the form and Open311 share limits and upload rules)."""

from hub.plugins import Channel

# Its cases have the channel ``open311``; their answers are picked up (GET requests, servicerequestupdates),
# so the adapter is the hub's pick-up adapter: storing the answer is delivering it.
CHANNEL = Channel(name="open311", routes="channels.open311.api:setup",
                  outbound={"open311": "hub.queue.outbox:build_pickup_adapter"},
                  openapi="channels.open311.openapi:OPERATIONS")
