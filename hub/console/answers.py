"""What the answer box offers: the reply templates, the service card as plain text, and only the channels
this hub can send on.

* Reply templates come from ``[console] reply_templates`` ("Titel: Text"); ``{leistung}`` and
  ``{behoerde}`` become the case's service and office (plain replacement, nothing else is interpreted).
* "Karte einfügen" inserts the answer card — service, what to bring, fees, office with address, phone and
  opening hours — as plain text: the same text :func:`hub.console.calls.card_text` sends to a caller, with
  the catalogue's HTML turned into text.
* :func:`configured_channels` is the one rule for which answer channels are offered: the outbound adapters
  the channel registry (``channels.REGISTRY`` through :mod:`hub.plugins`, built by
  :func:`hub.queue.adapters.load_adapters`) could set up with this hub's configuration. No [twilio]
  account, no "per SMS"; no SMTP relay, no "per E-Mail".
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from hub.console.calls import card_text

PLACEHOLDERS = ("{leistung}", "{behoerde}")


def reply_templates(templates: Iterable[str], row: Mapping[str, Any]) -> list[dict[str, str]]:
    """``[{"title", "text"}]`` for the case ``row`` (placeholders filled; a missing value reads neutrally)."""
    values = {"{leistung}": row.get("service_name") or "Ihr Anliegen",
              "{behoerde}": row.get("authority_name") or "die zuständige Stelle"}
    out = []
    for item in templates:
        title, _sep, text = item.partition(":")
        text = text.strip()
        for key in PLACEHOLDERS:
            text = text.replace(key, values[key])
        out.append({"title": title.strip(), "text": text})
    return out


def _plain(value: Any) -> Any:
    from knowledge.text import html_to_text

    if isinstance(value, str) and "<" in value:
        return html_to_text(value).strip()
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def case_card_text(kb: Any, row: Mapping[str, Any]) -> str | None:
    """The card of the case's service and office as plain text; None while the case has no service."""
    from hub.console.pickers import case_place
    from knowledge.base import authority_json, service_json

    if kb is None:
        return None
    service = kb.services.get(row.get("service_id") or "")
    if service is None:
        return None
    region = case_place(kb, row)
    if region is not None:
        service = kb.view_at(service, region) or service
    data = {k: _plain(v) for k, v in service_json(service).items()}
    authority = kb.authorities.get(row.get("authority_id") or "")
    return card_text(data, authority_json(authority) if authority is not None else None)


def configured_channels(settings: Any, adapters: Iterable[str] | None) -> frozenset[str]:
    """The case channels answers can be sent on here: the running outbox's adapters when the queue runs in
    this process, else those :func:`hub.queue.adapters.load_adapters` builds from ``settings``."""
    if adapters is not None:
        return frozenset(adapters)
    from hub.queue.adapters import load_adapters

    return frozenset(load_adapters(settings))


def offered(wanted: Iterable[str], configured: frozenset[str]) -> list[str]:
    """``wanted`` channels in their order, only those configured."""
    return [c for c in wanted if c in configured]
