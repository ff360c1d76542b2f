"""Twilio: calls in the phone menu, SMS opt-outs, delivery reports; attachments recorded by URL (MMS).

Revision ID: 0005_twilio
Revises: 0004_queue
Create Date: 2026-12-02

The tables of ``channels/twilio/store.py``. ``hub_attachment.url`` records media a provider keeps (the
pictures of an MMS at Twilio) without their bytes. As in the earlier revisions every table and index is
created ``if_not_exists`` and the column only where it is missing, so a database made by
``SQLModel.metadata.create_all`` is adopted.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005_twilio"
down_revision = "0004_queue"
branch_labels = None
depends_on = None


def _ts(name: str, nullable: bool = True) -> sa.Column:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    columns = {c["name"] for c in sa.inspect(op.get_bind()).get_columns("hub_attachment")}
    if "url" not in columns:
        op.add_column("hub_attachment", sa.Column("url", sa.String(1000), nullable=True))
    op.create_table(
        "twilio_call",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("call_sid", sa.String(34), nullable=False, unique=True),
        _ts("started_at", nullable=False),
        _ts("updated_at", nullable=False),
        _ts("ended_at"),
        sa.Column("step", sa.String(16), nullable=False),
        sa.Column("tries", sa.Integer(), nullable=False),
        sa.Column("turns", sa.Integer(), nullable=False),
        sa.Column("caller", sa.String(20)),
        sa.Column("concern", sa.Text()),
        sa.Column("place", sa.String(500)),
        sa.Column("pending_number", sa.String(20)),
        sa.Column("service_id", sa.String(100)),
        sa.Column("authority_id", sa.String(100)),
        sa.Column("outcome", sa.String(16)),
        sa.Column("transfer_result", sa.String(32)),
        sa.Column("queue_seconds", sa.Integer()),
        sa.Column("duration_seconds", sa.Integer()),
        sa.Column("case_id", sa.Integer(), sa.ForeignKey("hub_case.id", ondelete="SET NULL")),
        sa.Column("hub_call_id", sa.Integer(), sa.ForeignKey("hub_call.id", ondelete="SET NULL")),
        sa.Column("extra", sa.JSON(), nullable=False),
        if_not_exists=True,
    )
    for column in ("started_at", "outcome", "case_id"):
        op.create_index(f"ix_twilio_call_{column}", "twilio_call", [column], if_not_exists=True)
    op.create_table(
        "twilio_opt_out",
        sa.Column("phone", sa.String(20), primary_key=True),
        _ts("opted_out_at", nullable=False),
        sa.Column("source", sa.String(32), nullable=False),
        if_not_exists=True,
    )
    op.create_table(
        "twilio_delivery",
        sa.Column("message_id", sa.Integer(), sa.ForeignKey("hub_message.id", ondelete="CASCADE"),
                  primary_key=True),
        sa.Column("message_sid", sa.String(34), unique=True),
        sa.Column("status", sa.String(24), nullable=False),
        sa.Column("error_code", sa.Integer()),
        _ts("updated_at", nullable=False),
        if_not_exists=True,
    )


def downgrade() -> None:
    op.drop_table("twilio_delivery", if_exists=True)
    op.drop_table("twilio_opt_out", if_exists=True)
    for column in ("started_at", "outcome", "case_id"):
        op.drop_index(f"ix_twilio_call_{column}", "twilio_call", if_exists=True)
    op.drop_table("twilio_call", if_exists=True)
    with op.batch_alter_table("hub_attachment") as batch:
        batch.drop_column("url")
