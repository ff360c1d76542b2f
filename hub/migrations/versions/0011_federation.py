"""Federated catalogue (issue 13): catalogue areas, the role of a Zuständigkeit.

Revision ID: 0011_federation
Revises: 0010_learning
Create Date: 2026-12-02

* ``catalog_area`` – areas a catalogue lends its texts to beyond its owner's region
  (:class:`knowledge.models.CatalogArea`; the demo's Land catalogue is valid in Kreis Soest too).
* ``responsibility.role`` – the role of a Zuständigkeit (XZuFi): ``zustaendig`` (the office that does
  it; routing uses these) or ``ansprechpunkt`` (a contact point, shown beside it). Existing rows are
  ``zustaendig``, which is what they meant.

Tables are created ``if_not_exists`` like the earlier revisions (adopts a ``create_all`` database).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011_federation"
down_revision = "0010_learning"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "catalog_area",
        sa.Column("owner_ars", sa.String(12), primary_key=True),
        sa.Column("area_ars", sa.String(12), primary_key=True),
        if_not_exists=True,
    )
    columns = {c["name"] for c in sa.inspect(op.get_bind()).get_columns("responsibility")}
    if "role" not in columns:
        with op.batch_alter_table("responsibility") as batch:
            batch.add_column(sa.Column("role", sa.String(), nullable=False, server_default="zustaendig"))


def downgrade() -> None:
    with op.batch_alter_table("responsibility") as batch:
        batch.drop_column("role")
    op.drop_table("catalog_area")
