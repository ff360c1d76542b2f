"""Agent console: accounts, their scopes, sessions (hub/auth.py) and call records (hub/calls.py).

Revision ID: 0003_console
Revises: 0002_catalog_sync
Create Date: 2026-11-24

Like the earlier revisions, every table and index is created ``if_not_exists``, so a database whose
tables were made by ``SQLModel.metadata.create_all`` is adopted instead of failing.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003_console"
down_revision = "0002_catalog_sync"
branch_labels = None
depends_on = None


def _ts(name: str, nullable: bool = True) -> sa.Column:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "hub_user",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("name", sa.String(100), nullable=False, unique=True),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("password_hash", sa.String(255), nullable=False),
        _ts("created_at", nullable=False),
        _ts("disabled_at"),
        sa.Column("failed_logins", sa.Integer(), nullable=False),
        _ts("failed_since"),
        _ts("locked_until"),
        _ts("last_login_at"),
        if_not_exists=True,
    )
    op.create_table(
        "hub_user_scope",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("user_id", sa.Integer(), sa.ForeignKey("hub_user.id", ondelete="CASCADE"), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("value", sa.String(100), nullable=False),
        sa.UniqueConstraint("user_id", "kind", "value", name="uq_hub_user_scope"),
        if_not_exists=True,
    )
    op.create_index("ix_hub_user_scope_user_id", "hub_user_scope", ["user_id"], if_not_exists=True)
    op.create_table(
        "hub_session",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("user_id", sa.Integer(), sa.ForeignKey("hub_user.id", ondelete="CASCADE"), nullable=False),
        _ts("created_at", nullable=False),
        _ts("last_seen_at", nullable=False),
        _ts("expires_at", nullable=False),
        sa.Column("csrf_token", sa.String(64), nullable=False),
        if_not_exists=True,
    )
    op.create_index("ix_hub_session_user_id", "hub_session", ["user_id"], if_not_exists=True)
    op.create_table(
        "hub_call",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("agent", sa.String(100), nullable=False),
        _ts("started_at", nullable=False),
        _ts("ended_at"),
        sa.Column("answered_within_s", sa.Float()),
        sa.Column("outcome", sa.String(16)),
        sa.Column("service_id", sa.String(100)),
        sa.Column("service_name", sa.String(500)),
        sa.Column("authority_id", sa.String(100)),
        sa.Column("authority_name", sa.String(500)),
        sa.Column("case_id", sa.Integer(), sa.ForeignKey("hub_case.id", ondelete="SET NULL")),
        if_not_exists=True,
    )
    for column in ("agent", "started_at", "outcome", "authority_id", "case_id"):
        op.create_index(f"ix_hub_call_{column}", "hub_call", [column], if_not_exists=True)


def downgrade() -> None:
    for name in ("hub_call", "hub_session", "hub_user_scope", "hub_user"):
        op.drop_table(name)
