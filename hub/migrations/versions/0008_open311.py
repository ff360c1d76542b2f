"""Open311 (issue 15): the client's service, and a channel of its own.

Revision ID: 0008_open311
Revises: 0007_security
Create Date: 2026-12-02

* ``hub_case.requested_service_id`` – the service an Open311 client named (``service_code``). The
  routing stage routes such a case by that service and lets the text decide only the office; NULL for
  every other case (routed by its text as before).
* Cases and messages that came in over Open311 had the channel ``api`` (told apart only by their
  external id ``open311:<key>:<code>:<random>``). They get the channel ``open311``: the inbound
  messages by that external id, their cases, and the answers of those cases (picked up by the client
  the same way as before, so no pending answer changes how it is delivered).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008_open311"
down_revision = "0007_security"
branch_labels = None
depends_on = None

_OPEN311_CASES = (
    "SELECT case_id FROM hub_message WHERE channel = 'api' AND direction = 'in' "
    "AND external_id LIKE 'open311:%'"
)


def upgrade() -> None:
    columns = {c["name"] for c in sa.inspect(op.get_bind()).get_columns("hub_case")}
    if "requested_service_id" not in columns:
        op.add_column("hub_case", sa.Column("requested_service_id", sa.String(100), nullable=True))
    # Cases first (they are found by their inbound message), then the messages of those cases.
    op.execute(f"UPDATE hub_case SET channel = 'open311' WHERE channel = 'api' AND id IN ({_OPEN311_CASES})")
    op.execute(
        "UPDATE hub_message SET channel = 'open311' WHERE channel = 'api' AND "
        "case_id IN (SELECT id FROM hub_case WHERE channel = 'open311')"
    )


def downgrade() -> None:
    op.execute("UPDATE hub_message SET channel = 'api' WHERE channel = 'open311'")
    op.execute("UPDATE hub_case SET channel = 'api' WHERE channel = 'open311'")
    with op.batch_alter_table("hub_case") as batch:
        batch.drop_column("requested_service_id")
