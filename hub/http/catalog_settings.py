"""Config section of the catalogue sync (``[catalog]``).

The lead wires it into :class:`hub.config.Settings` as ``catalog``. Code reads it through
:func:`catalog_settings`, which falls back to the defaults while a ``Settings`` object does not carry
the section (yet).
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from knowledge.settings import Section


class CatalogSettings(Section):
    """Catalogue sync: municipalities and counties push their own services, offices and responsibilities."""

    max_body_bytes: int = Field(
        64 * 1024 * 1024,
        ge=1024,
        description="Largest catalogue upload (PUT snapshot, POST changes) in bytes; larger gets 413. "
        "A snapshot of 10,000 services is about 15 MB. Independent of [server] max_body_bytes.",
    )
    require_if_match: bool = Field(
        False,
        description="When true, writes without an If-Match header are refused with 428, so no writer "
        "can overwrite a change it has not seen. When false, If-Match is checked only when sent.",
    )
    poll_seconds: float = Field(
        0.5,
        ge=0,
        description="How often a running hub looks for catalogue versions written by other processes "
        "(citizen-hub catalog import, other hub processes) and applies them to its lookup index; 0 = never. "
        "Changes sent to this process's own API are visible at once; those of other processes within "
        "this interval (0.5 s keeps them inside the 1 s the sync promises).",
    )

    max_delete_share: float = Field(
        0.2,
        ge=0,
        le=1,
        description="A snapshot (PUT /api/catalog/ARS/snapshot, catalog import --replace) that would delete "
        "more than this share of the region's objects is refused (409) with what it would delete, unless "
        "forced (?force=true, --force): an incomplete export must not silently empty a catalogue.",
    )


def catalog_settings(settings: Any) -> CatalogSettings:
    """The ``[catalog]`` section of ``settings``, or the defaults when it has none."""
    section = getattr(settings, "catalog", None)
    return section if isinstance(section, CatalogSettings) else CatalogSettings()
