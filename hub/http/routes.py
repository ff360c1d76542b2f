"""The explicit registry of HTTP route modules.

Each module listed here exposes ``setup(app: aiohttp.web.Application) -> None`` and adds its routes
(and, if it needs them, startup/cleanup hooks). ``hub.http.app.create_app`` calls the hub's own first,
then each channel's (``hub.plugins``: ``Channel.routes``), in registry order.
"""

from __future__ import annotations

#: The hub's own route modules.
HUB_ROUTE_MODULES: tuple[str, ...] = (
    "hub.http.api_knowledge",  # /healthz, /api/lookup
    "hub.http.api_cases",  # /api/requests, /api/cases…, /metrics; starts the queue's workers
    "hub.http.api_catalog",  # /api/catalog/{ars}… (sync)
    "hub.http.openapi",  # /api/openapi.json
    "hub.console.pages",  # /console/… (agents, supervisors)
)


def route_setups() -> tuple[str, ...]:
    """``"module:setup"`` of every route module: the hub's, then the channels'."""
    from hub.plugins import route_setups as channel_route_setups

    return (*(f"{m}:setup" for m in HUB_ROUTE_MODULES), *channel_route_setups())
