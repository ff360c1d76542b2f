"""The web channel: the citizen form (``form``), its status page, texts in German and English (``i18n``)
and the ``[web]`` section (``settings``). Answers are picked up on the status page."""

from channels.web.settings import WebSettings
from hub.plugins import Channel, SettingsSection

CHANNEL = Channel(
    name="web",
    settings=(SettingsSection("web", WebSettings, "Web channel: citizen form and status page."),),
    routes="channels.web.form:setup",
    outbound={"web": "hub.queue.outbox:build_pickup_adapter"},
    openapi="channels.web.openapi:OPERATIONS",
)
