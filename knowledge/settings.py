"""The base of every config section, and the sections of the knowledge layer.

``Section`` lives here, in the lowest layer, so that every layer can define its own sections without an
import cycle: ``hub.config`` assembles the one :class:`hub.config.Settings` model from the sections of
``knowledge``, ``hub`` and the channels (``hub.plugins``), and no section module imports ``hub.config``.
"""

from __future__ import annotations

from typing import Protocol

from pydantic import BaseModel, ConfigDict, Field, field_validator


class ConfigError(Exception):
    """The configuration cannot be used; the message says why."""


class Section(BaseModel):
    """Base of every config section: unknown keys are an error, so typos fail at start-up."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class RegionSettings(Section):
    home_region: str = Field(
        "01060",
        description="ARS prefix of the deployment's home region (Land '01', Kreis '01060', ...). A place name "
        "that exists in several regions resolves inside the home region first.",
    )
    clarification_team: list[str] = Field(
        default_factory=list,
        description="Authority ids whose agents (accounts and agent tokens scoped to one of them) work the "
        "clarification queue: cases without an office that lie in the home region or name no place. Empty = "
        "the agents of home_region itself (scoped to the region, a region containing it, or an authority "
        "seated at it, e.g. kreis-01060). In the environment: a comma-separated list.",
    )
    regions_file: str = Field(
        "",
        description="Destatis Gemeindeverzeichnis CSV to load; empty = the copy shipped in knowledge/data.",
    )
    postcodes_file: str = Field(
        "",
        description="Postcode-to-AGS CSV (OSM) to load; empty = the copy shipped in knowledge/data.",
    )


    @field_validator("clarification_team", mode="before")
    @classmethod
    def _team(cls, v: object) -> object:
        if isinstance(v, str):  # from the environment: "kreis-01060, amt-010605053"
            return [part.strip() for part in v.split(",") if part.strip()]
        return v


class LookupSettings(Section):
    max_results: int = Field(10, ge=1, le=100, description="Most services a lookup returns.")
    min_score: float = Field(
        55.0, ge=0, le=100, description="Lowest match score (0-100) a service needs to be returned at all."
    )
    confident_score: float = Field(
        80.0,
        ge=0,
        le=100,
        description="Score from which the SMS and voice channels treat the best service as certain enough to ask "
        "only for the place; routing does not use it (a clear best candidate is not flagged for its score).",
    )
    clarify_office_margin: float = Field(
        0.10,
        ge=0,
        le=1,
        description="Routing asks an agent when a candidate that leads to another office is this close to the "
        "best one. Scale 0-1: the lexical match score / 100, or a learned router's probability.",
    )
    clarify_service_margin: float = Field(
        0.03,
        ge=0,
        le=1,
        description="Routing asks an agent when a clearly different service (not a variant of the same "
        "Leistung) is this close to the best one, even at the same office. Same 0-1 scale.",
    )
    max_query_chars: int = Field(
        2000, ge=10, description="Longer queries are cut to this many characters before matching."
    )


class KnowledgeSettings(Protocol):
    """What the knowledge base reads of the hub's settings (``hub.config.Settings`` has both)."""

    regions: RegionSettings
    lookup: LookupSettings


class DefaultKnowledgeSettings:
    """The defaults, for a knowledge base built without the hub's settings (tests, benchmarks)."""

    def __init__(self) -> None:
        self.regions = RegionSettings()
        self.lookup = LookupSettings()
