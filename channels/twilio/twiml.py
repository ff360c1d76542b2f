"""TwiML documents written as strings, exactly as twilio's ``VoiceResponse``/``MessagingResponse`` write them.

The library builds an ElementTree per answer and serialises it; for documents of a handful of elements
that was a tenth of a webhook's time. These helpers write the same bytes (attributes sorted by name,
booleans as ``true``/``false``, ElementTree's escaping, an empty element as ``<X />``), which
``tests/channels/twilio/test_twilio_twiml.py`` compares against the library for hostile texts.
"""

from __future__ import annotations

from collections.abc import Mapping

HEAD = '<?xml version="1.0" encoding="UTF-8"?>'


def text(value: str) -> str:
    """Character data escaped as ElementTree does (``&``, ``<``, ``>``)."""
    if "&" in value:
        value = value.replace("&", "&amp;")
    if "<" in value:
        value = value.replace("<", "&lt;")
    if ">" in value:
        value = value.replace(">", "&gt;")
    return value


def attribute(value: str) -> str:
    """An attribute value escaped as ElementTree does (also quotes and line breaks, which would not survive)."""
    value = text(value)
    if '"' in value:
        value = value.replace('"', "&quot;")
    if "\r" in value:
        value = value.replace("\r", "&#13;")
    if "\n" in value:
        value = value.replace("\n", "&#10;")
    if "\t" in value:
        value = value.replace("\t", "&#09;")
    return value


def _value(value: object) -> str:
    return ("true" if value else "false") if isinstance(value, bool) else str(value)


def open_tag(name: str, attrs: Mapping[str, object] | None = None) -> str:
    """``<name a="…" b="…"`` (not closed), attributes sorted by name; ``None`` values left out, as twilio does."""
    if not attrs:
        return "<" + name
    return "<" + name + "".join(f' {key}="{attribute(_value(attrs[key]))}"' for key in sorted(attrs)
                                if attrs[key] is not None)


def element(name: str, attrs: Mapping[str, object] | None = None, body: str = "") -> str:
    """One element; ``body`` is markup already escaped (use :func:`text` for words)."""
    start = open_tag(name, attrs)
    return f"{start}>{body}</{name}>" if body else start + " />"


def response(body: str) -> str:
    """The whole document: the declaration and ``<Response>`` around ``body`` (``<Response />`` when empty)."""
    return f"{HEAD}<Response>{body}</Response>" if body else HEAD + "<Response />"
