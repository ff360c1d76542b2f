"""The explicit registry of HTTP route modules.

Each module listed here exposes ``setup(app: aiohttp.web.Application) -> None`` and adds its routes
(and, if it needs them, startup/cleanup hooks). ``hub.app.create_app`` calls them in this order.
"""

ROUTE_MODULES: tuple[str, ...] = (
    "hub.api_knowledge",  # /healthz, /api/lookup
    "hub.api_cases",  # /api/requests, /api/cases…, /metrics; starts the queue's workers
    "hub.api_catalog",  # /api/catalog/{ars}… (sync)
    "hub.openapi",  # /api/openapi.json
    "channels.open311",  # /open311/v2/… (GeoReport v2)
    "hub.console",  # /console/… (agents, supervisors)
    "channels.web",  # / (citizen form), /status/{token}
)
