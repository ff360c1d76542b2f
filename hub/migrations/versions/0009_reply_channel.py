"""E-mail answers and auto-replies (issue 15): the answer channel the citizen chose.

Revision ID: 0009_reply_channel
Revises: 0008_open311
Create Date: 2026-12-02

* ``hub_case.reply_channel`` – the channel the citizen asked to be answered on when it is not the one the
  request came by (a web-form citizen who chose "Per E-Mail"). NULL (every existing case) = the case's
  own channel, which is what the hub did before. Read by ``hub.queue.outbox.answer_route``.

Auto-replies need no column: they are messages of ``kind = 'auto_reply'``.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009_reply_channel"
down_revision = "0008_open311"
branch_labels = None
depends_on = None


def upgrade() -> None:
    columns = {c["name"] for c in sa.inspect(op.get_bind()).get_columns("hub_case")}
    if "reply_channel" not in columns:  # a create_all database has it already
        op.add_column("hub_case", sa.Column("reply_channel", sa.String(16), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("hub_case") as batch:
        batch.drop_column("reply_channel")
