"""Open311 GeoReport v2 (``api``): services, discovery and service requests for outside clients such as
FixMyStreet. Its settings are part of ``[web]`` (the form and Open311 share limits and upload rules)."""

from hub.plugins import Channel

CHANNEL = Channel(name="open311", routes="channels.open311.api:setup")
