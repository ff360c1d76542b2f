"""Initial schema: the knowledge base and the request queue.

Revision ID: 0001_initial
Revises:
Create Date: 2026-11-23

Every ``create_table``/``create_index`` uses ``if_not_exists`` so that a database made earlier with
``SQLModel.metadata.create_all`` is adopted instead of failing. The audit log is made append-only
in the database itself: triggers refuse UPDATE and DELETE on ``hub_audit``.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001_initial"
down_revision = None
branch_labels = None
depends_on = None


def _ts(name: str, nullable: bool = True) -> sa.Column:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def _table(name: str, *columns, indexes: tuple = ()) -> None:
    op.create_table(name, *columns, if_not_exists=True)
    for index in indexes:
        index_name, cols, *unique = index
        op.create_index(index_name, name, cols, unique=bool(unique and unique[0]), if_not_exists=True)


def upgrade() -> None:
    # -- knowledge base (knowledge/models.py) ---------------------------------------------------------
    _table(
        "region",
        sa.Column("ars", sa.String(12), primary_key=True),
        sa.Column("ags", sa.String(8)),
        sa.Column("name", sa.String(), nullable=False),
        sa.Column("level", sa.String(), nullable=False),
        sa.Column("kind", sa.String(), nullable=False),
        sa.Column("parent_ars", sa.String(12)),
        sa.Column("population", sa.Integer()),
        sa.Column("postcode", sa.String()),
        sa.Column("lat", sa.Float()),
        sa.Column("lon", sa.Float()),
        indexes=(("ix_region_ags", ["ags"]), ("ix_region_level", ["level"]), ("ix_region_name", ["name"]),
                 ("ix_region_parent_ars", ["parent_ars"])),
    )
    _table(
        "postcode",
        sa.Column("plz", sa.String(5), primary_key=True),
        sa.Column("ags", sa.String(8), primary_key=True),
        indexes=(("ix_postcode_ags", ["ags"]),),
    )
    _table(
        "service",
        sa.Column("id", sa.String(), primary_key=True),
        sa.Column("leika", sa.String(14)),
        sa.Column("name", sa.String(), nullable=False),
        sa.Column("synonyms", sa.JSON(), nullable=False),
        sa.Column("short_text", sa.String(), nullable=False),
        sa.Column("full_text", sa.String(), nullable=False),
        sa.Column("documents", sa.JSON(), nullable=False),
        sa.Column("fees", sa.String(), nullable=False),
        sa.Column("processing_time", sa.String(), nullable=False),
        sa.Column("online_url", sa.String()),
        sa.Column("topic", sa.String(), nullable=False),
        sa.Column("life_situation", sa.String(), nullable=False),
        sa.Column("level", sa.String(), nullable=False),
        sa.Column("owner_ars", sa.String(), nullable=False),
        _ts("updated_at", nullable=False),
        indexes=(("ix_service_leika", ["leika"]), ("ix_service_owner_ars", ["owner_ars"])),
    )
    _table(
        "authority",
        sa.Column("id", sa.String(), primary_key=True),
        sa.Column("name", sa.String(), nullable=False),
        sa.Column("kind", sa.String(), nullable=False),
        sa.Column("region_ars", sa.String(12), nullable=False),
        sa.Column("street", sa.String(), nullable=False),
        sa.Column("postcode", sa.String(), nullable=False),
        sa.Column("city", sa.String(), nullable=False),
        sa.Column("phone", sa.String(), nullable=False),
        sa.Column("email", sa.String(), nullable=False),
        sa.Column("website", sa.String(), nullable=False),
        sa.Column("opening_hours", sa.JSON(), nullable=False),
        sa.Column("is_demo", sa.Boolean(), nullable=False),
        sa.Column("owner_ars", sa.String(), nullable=False),
        indexes=(("ix_authority_owner_ars", ["owner_ars"]), ("ix_authority_region_ars", ["region_ars"])),
    )
    _table(
        "responsibility",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("service_id", sa.String(), sa.ForeignKey("service.id")),
        sa.Column("region_ars", sa.String(12), nullable=False),
        sa.Column("level", sa.String()),
        sa.Column("authority_id", sa.String(), sa.ForeignKey("authority.id"), nullable=False),
        sa.Column("owner_ars", sa.String(), nullable=False),
        indexes=(("ix_resp_lookup", ["region_ars", "service_id", "level"]),
                 ("ix_responsibility_authority_id", ["authority_id"]),
                 ("ix_responsibility_owner_ars", ["owner_ars"]),
                 ("ix_responsibility_service_id", ["service_id"])),
    )

    # -- request queue (hub/cases.py) --------------------------------------------------------------
    _table(
        "hub_case",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("token", sa.String(32), nullable=False, unique=True),
        sa.Column("state", sa.String(32), nullable=False),
        sa.Column("channel", sa.String(16), nullable=False),
        _ts("created_at", nullable=False),
        _ts("updated_at", nullable=False),
        _ts("state_changed_at", nullable=False),
        _ts("last_inbound_at", nullable=False),
        sa.Column("contact_name", sa.String(500)),
        sa.Column("contact_email", sa.String(254)),
        sa.Column("contact_phone", sa.String(20)),
        sa.Column("contact_address", sa.Text()),
        sa.Column("location", sa.String(500)),
        sa.Column("service_id", sa.String(100)),
        sa.Column("service_name", sa.String(500)),
        sa.Column("authority_id", sa.String(100)),
        sa.Column("authority_name", sa.String(500)),
        sa.Column("route_confidence", sa.Float()),
        sa.Column("route_reason", sa.Text()),
        sa.Column("route_json", sa.JSON()),
        _ts("routed_at"),
        sa.Column("assigned_agent", sa.String(200)),
        sa.Column("resume_state", sa.String(32)),
        _ts("first_response_due"),
        _ts("first_responded_at"),
        _ts("forwarded_at"),
        _ts("forward_due"),
        _ts("forward_met_at"),
        _ts("answered_at"),
        _ts("closed_at"),
        _ts("sla_paused_since"),
        sa.Column("sla_pauses", sa.JSON(), nullable=False),
        _ts("sla_breached_at"),
        sa.Column("claimed_by", sa.String(200)),
        _ts("claimed_until"),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.Text()),
        _ts("anonymised_at"),
        indexes=(
            ("ix_hub_case_queue", ["state", "claimed_until"]),
            ("ix_hub_case_contact_email", ["contact_email"]),
            ("ix_hub_case_contact_phone", ["contact_phone"]),
            ("ix_hub_case_authority_id", ["authority_id"]),
        ),
    )
    _table(
        "hub_message",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("case_id", sa.Integer(), sa.ForeignKey("hub_case.id", ondelete="CASCADE"), nullable=False),
        sa.Column("direction", sa.String(3), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("channel", sa.String(16), nullable=False),
        sa.Column("external_id", sa.String(255)),
        _ts("created_at", nullable=False),
        _ts("received_at"),
        sa.Column("subject", sa.String(500)),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("location", sa.String(500)),
        sa.Column("raw_ref", sa.String(1000)),
        sa.Column("author", sa.String(200)),
        sa.Column("recipient", sa.String(500)),
        sa.Column("send_state", sa.String(16)),
        sa.Column("send_attempts", sa.Integer(), nullable=False),
        _ts("next_attempt_at"),
        _ts("send_deadline"),
        sa.Column("claimed_by", sa.String(200)),
        _ts("claimed_until"),
        _ts("sent_at"),
        sa.Column("last_error", sa.Text()),
        sa.UniqueConstraint("channel", "external_id", name="uq_hub_message_channel_external_id"),
        indexes=(("ix_hub_message_case_id", ["case_id"]),
                 ("ix_hub_message_outbox", ["send_state", "next_attempt_at"])),
    )
    _table(
        "hub_attachment",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("message_id", sa.Integer(), sa.ForeignKey("hub_message.id", ondelete="CASCADE"),
                  nullable=False),
        sa.Column("filename", sa.String(255), nullable=False),
        sa.Column("content_type", sa.String(127), nullable=False),
        sa.Column("size_bytes", sa.Integer(), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        _ts("created_at", nullable=False),
        indexes=(("ix_hub_attachment_message_id", ["message_id"]), ("ix_hub_attachment_sha256", ["sha256"])),
    )
    _table(
        "hub_audit",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("case_id", sa.Integer()),
        _ts("at", nullable=False),
        sa.Column("actor", sa.String(200), nullable=False),
        sa.Column("action", sa.String(32), nullable=False),
        sa.Column("from_state", sa.String(32)),
        sa.Column("to_state", sa.String(32)),
        sa.Column("reason", sa.Text()),
        indexes=(("ix_hub_audit_case_id", ["case_id"]),),
    )
    _table(
        "hub_labelled_example",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("case_id", sa.Integer(), sa.ForeignKey("hub_case.id", ondelete="SET NULL")),
        _ts("created_at", nullable=False),
        sa.Column("agent", sa.String(200), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("location", sa.String(500)),
        sa.Column("predicted_service_id", sa.String(100)),
        sa.Column("predicted_authority_id", sa.String(100)),
        sa.Column("service_id", sa.String(100)),
        sa.Column("authority_id", sa.String(100)),
        indexes=(("ix_hub_labelled_example_case_id", ["case_id"]),),
    )
    _table(
        "hub_api_token",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("name", sa.String(100), nullable=False, unique=True),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("token_hash", sa.String(64), nullable=False, unique=True),
        _ts("created_at", nullable=False),
        _ts("revoked_at"),
    )

    # -- the audit log is append-only ------------------------------------------------------------------
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            """
            CREATE OR REPLACE FUNCTION hub_audit_append_only() RETURNS trigger AS $$
            BEGIN
                RAISE EXCEPTION 'hub_audit is append-only';
            END;
            $$ LANGUAGE plpgsql
            """
        )
        op.execute("DROP TRIGGER IF EXISTS hub_audit_no_change ON hub_audit")
        op.execute(
            "CREATE TRIGGER hub_audit_no_change BEFORE UPDATE OR DELETE ON hub_audit "
            "FOR EACH ROW EXECUTE FUNCTION hub_audit_append_only()"
        )
    else:
        for event in ("UPDATE", "DELETE"):
            op.execute(
                f"CREATE TRIGGER IF NOT EXISTS hub_audit_no_{event.lower()} BEFORE {event} ON hub_audit "
                "BEGIN SELECT RAISE(ABORT, 'hub_audit is append-only'); END"
            )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS hub_audit_no_change ON hub_audit")
        op.execute("DROP FUNCTION IF EXISTS hub_audit_append_only()")
    for name in ("hub_api_token", "hub_labelled_example", "hub_audit", "hub_attachment", "hub_message",
                 "hub_case", "responsibility", "authority", "service", "postcode", "region"):
        op.drop_table(name)
