"""Paper channel: one row per scanned page (the review queue).

Revision ID: 0006_paper
Revises: 0005_twilio
Create Date: 2026-12-01

The table belongs to ``channels.paper.store`` (registered through ``hub.plugins``); its rows follow
their case and message (``ON DELETE CASCADE``), and ``hub.queue.privacy`` purges them through the
channel's privacy handler.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006_paper"
down_revision = "0005_twilio"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "paper_page",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("key", sa.String(255), nullable=False, unique=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("source_name", sa.String(255)),
        sa.Column("source_sha256", sa.String(64)),
        sa.Column("page", sa.Integer()),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("problem", sa.String(32)),
        sa.Column("reason", sa.Text()),
        sa.Column("form_id", sa.String(20)),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("case_id", sa.Integer(), sa.ForeignKey("hub_case.id", ondelete="CASCADE")),
        sa.Column("message_id", sa.Integer(), sa.ForeignKey("hub_message.id", ondelete="CASCADE")),
        sa.Column("confidence", sa.Float()),
        sa.Column("needs_review", sa.Boolean(), nullable=False),
        sa.Column("review_notes", sa.Text()),
        sa.Column("page_sha256", sa.String(64)),
        sa.Column("box_sha256", sa.String(64)),
        sa.Column("reviewed_by", sa.String(200)),
        sa.Column("reviewed_at", sa.DateTime(timezone=True)),
        sa.Column("review_action", sa.String(16)),
        sa.Column("purge_after", sa.DateTime(timezone=True)),
        if_not_exists=True,
    )
    for column in ("created_at", "source_sha256", "status", "form_id", "case_id", "message_id", "needs_review",
                   "page_sha256", "box_sha256", "purge_after"):
        op.create_index(f"ix_paper_page_{column}", "paper_page", [column], if_not_exists=True)


def downgrade() -> None:
    op.drop_table("paper_page")
