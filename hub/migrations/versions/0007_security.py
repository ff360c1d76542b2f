"""Security (issue 14): the case scope of agent tokens, log-in failures per account and source.

Revision ID: 0007_security
Revises: 0006_paper
Create Date: 2026-12-02

* ``hub_token_case_scope`` – what an agent token may see: authorities, regions (ARS prefixes) or
  every authority (``kind='all'``). Agent tokens that exist already get **no** row: they stay valid
  but the case API refuses them (403, with the command that fixes it) until an admin gives them a
  scope with ``citizen-hub token scope NAME --authority ID | --region ARS | --all-authorities``.
  Guessing a scope for them (every authority, as before) would keep the hole open.
* ``hub_login_failure`` – failed console log-ins counted per account *and* source (a SHA-256 of the
  client's address), so that guessing from one place locks that place out, not the agent at their
  own desk. The account-wide counters of ``hub_user`` stay (unused by new code; ``user unlock``
  clears both).

Tables are created ``if_not_exists`` like the earlier revisions (adopts a ``create_all`` database).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007_security"
down_revision = "0006_paper"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "hub_token_case_scope",
        sa.Column("token_id", sa.Integer(), sa.ForeignKey("hub_api_token.id", ondelete="CASCADE"),
                  primary_key=True),
        sa.Column("kind", sa.String(16), primary_key=True),
        sa.Column("value", sa.String(100), primary_key=True),
        if_not_exists=True,
    )
    op.create_table(
        "hub_login_failure",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("user_id", sa.Integer(), sa.ForeignKey("hub_user.id", ondelete="CASCADE"), nullable=False),
        sa.Column("source", sa.String(64), nullable=False),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("failed_since", sa.DateTime(timezone=True), nullable=False),
        sa.Column("locked_until", sa.DateTime(timezone=True)),
        sa.UniqueConstraint("user_id", "source", name="uq_hub_login_failure"),
        if_not_exists=True,
    )
    op.create_index("ix_hub_login_failure_user_id", "hub_login_failure", ["user_id"], if_not_exists=True)


def downgrade() -> None:
    op.drop_table("hub_login_failure")
    op.drop_table("hub_token_case_scope")
