"""Citizens' phone numbers stored with the trunk zero after the country code (``+4904551…``).

Revision ID: 0012_phone_trunk_zero
Revises: 0011_federation
Create Date: 2026-12-02

Before issue 15's phone rule, ``+49 (0)4551 1234`` was stored as ``+49045511234``: no such number
exists, and the case no longer matched the same citizen's next message (the queue threads by the number
in :func:`hub.queue.requests.normalise_phone` form, which drops the "(0)"). This rewrites those numbers in
that form. Only for country codes whose numbers never begin with 0 after the code (Germany, Austria,
Switzerland): an Italian ``+39 06…`` keeps its zero. Twilio's numbers (calls, opt-outs) come from Twilio in
E.164 and never had the zero.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012_phone_trunk_zero"
down_revision = "0011_federation"
branch_labels = None
depends_on = None

COUNTRIES = ("49", "43", "41")  # a 0 right after these codes is always the trunk prefix


def upgrade() -> None:
    bind = op.get_bind()
    for cc in COUNTRIES:
        head = f"+{cc}0"
        # substr is 1-based in SQLite and PostgreSQL alike; '+490' is 4 characters.
        bind.execute(
            sa.text(
                "UPDATE hub_case SET contact_phone = :cc || substr(contact_phone, :rest) "
                "WHERE contact_phone LIKE :like"
            ),
            {"cc": f"+{cc}", "rest": len(head) + 1, "like": f"{head}%"},
        )


def downgrade() -> None:
    # The old form was a defect; nothing to restore.
    pass
