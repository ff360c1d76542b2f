"""The channels: the one explicit registry of every way a request comes in and an answer goes out.

Each channel is a sub-package with its inbound handlers, its outbound adapter, its settings section and
its commands, and describes itself with one :class:`hub.plugins.Channel` (``CHANNEL`` in its
``__init__``). ``REGISTRY`` lists them; the hub finds it through the ``citizen_hub.channels`` entry
point (``pyproject.toml``). Adding a channel means writing its package and adding one line here (see
``docs/architecture.md``, "Adding a channel").
"""

from __future__ import annotations

from channels.email import CHANNEL as EMAIL
from channels.open311 import CHANNEL as OPEN311
from channels.paper import CHANNEL as PAPER
from channels.twilio import CHANNEL as TWILIO
from channels.web import CHANNEL as WEB

#: Every channel, in the order its routes and commands are registered.
REGISTRY = (
    OPEN311,  # /open311/v2/… (GeoReport v2)
    WEB,  # / (citizen form), /status/{token}; answers picked up on the status page
    EMAIL,  # SMTP/LMTP listener, IMAP poller, outbound SMTP; `citizen-hub email …`
    TWILIO,  # /twilio/sms, /twilio/voice…, /twilio/status; outbound SMS (answers to sms and phone cases)
    PAPER,  # pre-filled forms out, scans in (/api/paper/…, /console/paper/…), letters; `citizen-hub paper …`
)
