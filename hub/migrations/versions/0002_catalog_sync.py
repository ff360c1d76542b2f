"""Catalogue sync: versions, change log, online services, token scopes (knowledge/sync_models.py).

Revision ID: 0002_catalog_sync
Revises: 0001_initial
Create Date: 2026-11-23

Like the initial revision, every table and index is created ``if_not_exists``, so a database whose
tables were made by ``SQLModel.metadata.create_all`` is adopted instead of failing.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002_catalog_sync"
down_revision = "0001_initial"
branch_labels = None
depends_on = None


def _ts(name: str, nullable: bool = True) -> sa.Column:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "catalog_version",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("region_ars", sa.String(12), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        _ts("created_at", nullable=False),
        sa.Column("actor", sa.String(200), nullable=False),
        sa.Column("summary", sa.JSON(), nullable=False),
        sa.UniqueConstraint("region_ars", "version", name="uq_catalog_version_region_version"),
        if_not_exists=True,
    )
    op.create_table(
        "catalog_change",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("region_ars", sa.String(12), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("object_id", sa.String(400), nullable=False),
        sa.Column("op", sa.String(8), nullable=False),
        sa.Column("ref", sa.String(100)),
        if_not_exists=True,
    )
    op.create_index(
        "ix_catalog_change_region_version", "catalog_change", ["region_ars", "version"], if_not_exists=True
    )
    op.create_table(
        "catalog_online_service",
        sa.Column("id", sa.String(100), primary_key=True),
        sa.Column("service_id", sa.String(), sa.ForeignKey("service.id"), nullable=False),
        sa.Column("name", sa.String(300), nullable=False),
        sa.Column("url", sa.String(2000), nullable=False),
        sa.Column("owner_ars", sa.String(12), nullable=False),
        if_not_exists=True,
    )
    op.create_index(
        "ix_catalog_online_service_service_id", "catalog_online_service", ["service_id"], if_not_exists=True
    )
    op.create_index(
        "ix_catalog_online_service_owner_ars", "catalog_online_service", ["owner_ars"], if_not_exists=True
    )
    op.create_table(
        "catalog_token_scope",
        sa.Column(
            "token_id", sa.Integer(), sa.ForeignKey("hub_api_token.id", ondelete="CASCADE"), primary_key=True
        ),
        sa.Column("region_ars", sa.String(12), primary_key=True),
        _ts("created_at", nullable=False),
        if_not_exists=True,
    )


def downgrade() -> None:
    for name in ("catalog_token_scope", "catalog_online_service", "catalog_change", "catalog_version"):
        op.drop_table(name)
