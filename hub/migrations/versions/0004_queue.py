"""Queue: the audit log also refuses TRUNCATE on PostgreSQL.

Revision ID: 0004_queue
Revises: 0003_console
Create Date: 2026-12-01

0001 made ``hub_audit`` append-only with row triggers that refuse UPDATE and DELETE. On PostgreSQL
``TRUNCATE`` fires no row triggers, so it could still empty the log in one statement; a
statement-level ``BEFORE TRUNCATE`` trigger closes that gap. SQLite has no TRUNCATE (its "truncate
optimisation" of ``DELETE FROM t`` is off while a DELETE trigger exists), so nothing changes there.
"""

from __future__ import annotations

from alembic import op

revision = "0004_queue"
down_revision = "0003_console"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    # The function of 0001 (RAISE EXCEPTION 'hub_audit is append-only') serves statement triggers too.
    op.execute("DROP TRIGGER IF EXISTS hub_audit_no_truncate ON hub_audit")
    op.execute(
        "CREATE TRIGGER hub_audit_no_truncate BEFORE TRUNCATE ON hub_audit "
        "FOR EACH STATEMENT EXECUTE FUNCTION hub_audit_append_only()"
    )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS hub_audit_no_truncate ON hub_audit")
