"""The explicit registry of HTTP route modules.

Each module listed here exposes ``setup(app: aiohttp.web.Application) -> None`` and adds its routes
(and, if it needs them, startup/cleanup hooks). ``hub.app.create_app`` calls them in this order.
"""

ROUTE_MODULES: tuple[str, ...] = (
    "hub.api_knowledge",  # /healthz, /api/lookup
)
