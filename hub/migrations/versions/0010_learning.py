"""Learned routing (issue 18): the ``learned_model`` table, one learned router per catalogue area.

Revision ID: 0010_learning
Revises: 0009_reply_channel
Create Date: 2026-12-02

The model is stored as plain arrays (an ``.npz`` archive read with ``allow_pickle=False``) with its
SHA-256 and the version of the labelled examples it was trained on. The examples themselves stay in
``hub_labelled_example`` (imported history has no case: ``case_id`` NULL).

Created ``if_not_exists`` like the earlier revisions (adopts a ``create_all`` database).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010_learning"
down_revision = "0009_reply_channel"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "learned_model",
        sa.Column("area", sa.String(12), primary_key=True),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("data_version", sa.JSON(), nullable=False),
        sa.Column("trained_at", sa.DateTime(), nullable=False),
        sa.Column("model", sa.LargeBinary(), nullable=False),
        if_not_exists=True,
    )


def downgrade() -> None:
    op.drop_table("learned_model")
