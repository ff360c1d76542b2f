"""Where learned routers live: the ``learned_model`` table, one row per catalogue area.

A row holds the model's ``.npz`` bytes (:meth:`knowledge.learning.model.AreaModel.to_bytes`), their
SHA-256, the training data's version (count, highest example id, digest) and when it was trained. Nothing
is ever unpickled: a row whose bytes do not match its hash, or are not the plain-array format, is refused
with a log line and the area routes by the catalogue alone.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from sqlalchemy import JSON, Column, LargeBinary, String
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError
from sqlmodel import Field, SQLModel

from knowledge.learning.model import AreaModel, ModelIntegrityError

__all__ = ["LearnedModel", "delete_model", "load_learned_models", "model_t", "model_versions", "read_models",
           "write_model"]

log = logging.getLogger(__name__)


def _now() -> datetime:
    return datetime.now(UTC)


class LearnedModel(SQLModel, table=True):
    """The learned router of one catalogue area (ARS)."""

    __tablename__ = "learned_model"

    area: str = Field(sa_column=Column(String(12), primary_key=True))
    sha256: str = Field(sa_column=Column(String(64), nullable=False))
    data_version: dict = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    trained_at: datetime = Field(default_factory=_now)
    model: bytes = Field(sa_column=Column(LargeBinary, nullable=False))


model_t = LearnedModel.__table__


def model_versions(conn: Connection) -> dict[str, str]:
    """``{area: sha256}`` of every stored model (cheap: no model bytes)."""
    return {area: sha for area, sha in conn.execute(model_t.select().with_only_columns(model_t.c.area,
                                                                                      model_t.c.sha256))}


def read_models(conn: Connection, areas: list[str] | None = None) -> dict[str, AreaModel]:
    """Every stored model (or those of ``areas``) whose bytes match its hash."""
    query = model_t.select()
    if areas is not None:
        query = query.where(model_t.c.area.in_(areas))
    out: dict[str, AreaModel] = {}
    for row in conn.execute(query).mappings():
        try:
            out[row["area"]] = AreaModel.from_bytes(bytes(row["model"]), row["sha256"])
        except ModelIntegrityError as exc:
            log.error("learned router of area %s refused: %s", row["area"], exc)
    return out


def write_model(conn: Connection, model: AreaModel) -> str:
    """Store (replace) the area's model; returns its SHA-256."""
    data, sha = model.to_bytes()
    model.sha256 = sha
    conn.execute(model_t.delete().where(model_t.c.area == model.area))
    conn.execute(model_t.insert().values(area=model.area, sha256=sha, data_version=model.data_version,
                                         trained_at=_now(), model=data))
    return sha


def delete_model(conn: Connection, area: str) -> None:
    conn.execute(model_t.delete().where(model_t.c.area == area))


def load_learned_models(engine: Engine) -> dict[str, AreaModel]:
    """Every valid stored model; none (and a log line) when the table cannot be read (an old schema)."""
    try:
        with engine.connect() as conn:
            return read_models(conn)
    except DBAPIError as exc:
        log.warning("learned routers not loaded: %s", exc.__class__.__name__)
        return {}
