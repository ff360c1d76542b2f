"""The ``[learning]`` config section: when the learned routers are trained and how."""

from __future__ import annotations

from pydantic import Field

from knowledge.settings import Section


class LearningSettings(Section):
    enabled: bool = Field(
        True,
        description="Route with the learned models of the areas that have one (catalogue match + model); "
        "false = the catalogue alone.",
    )
    train_every_seconds: float = Field(
        3600.0,
        ge=0,
        description="How often a running hub (serve, queue worker) retrains the areas whose labelled examples "
        "changed since their model was trained, in a background thread; 0 = only on demand "
        "(citizen-hub history train).",
    )
    reload_seconds: float = Field(
        60.0,
        gt=0,
        description="How often a running hub looks for models another process trained (a cheap query of "
        "their hashes) and swaps them in.",
    )
    min_examples: int = Field(
        10, ge=2, description="Fewest labelled examples an area needs before a model is trained for it."
    )
    max_examples: int = Field(
        50_000, ge=10, description="Most recent labelled examples per area a model is trained on."
    )
    folds: int = Field(
        3, ge=2, le=10, description="Cross-validation folds that choose the catalogue weight and calibrate the "
        "probabilities during training."
    )
