"""Initial schema: sites, agents, teams, customers, conversations, messages, ratings, page views, canned replies.

This is the schema `create_tables` built before the store had migrations; nameplate.store.migrate marks such a
database as this revision instead of creating it again. Constraint names follow one convention, so later
migrations can drop or alter them on every engine (SQLite's batch mode needs names):
pk_<table>, fk_<table>_<column>_<referred table>, uq_<table>_<columns>, ix_<table>_<column>.

Revision ID: 0001
Revises:
Create Date: 2026-11-23
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _id(name: str = "id", nullable: bool = False) -> sa.Column:
    return sa.Column(name, sa.String(length=32), nullable=nullable)


def _at(name: str, nullable: bool = False) -> sa.Column:
    # Aware datetimes, stored in UTC: timestamptz on PostgreSQL, text on SQLite.
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "site",
        _id(),
        sa.Column("public_key", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("allowed_origins", sa.Text(), nullable=False),
        sa.Column("secret", sa.String(length=128), nullable=False),
        sa.Column("require_verification", sa.Boolean(), nullable=False),
        _at("created_at"),
        sa.PrimaryKeyConstraint("id", name="pk_site"),
        sa.UniqueConstraint("public_key", name="uq_site_public_key"),
    )

    op.create_table(
        "team",
        _id(),
        _id("site_id"),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_team"),
        sa.ForeignKeyConstraint(["site_id"], ["site.id"], name="fk_team_site_id_site"),
        sa.UniqueConstraint("site_id", "name", name="uq_team_site_id_name"),
    )
    op.create_index("ix_team_site_id", "team", ["site_id"])

    op.create_table(
        "agent",
        _id(),
        _id("site_id"),
        sa.Column("given_name", sa.String(length=100), nullable=False),
        sa.Column("family_name", sa.String(length=100), nullable=False),
        sa.Column("title", sa.String(length=120), nullable=False),
        sa.Column("intro", sa.String(length=280), nullable=False),
        sa.Column("email", sa.String(length=254), nullable=False),
        sa.Column("password_hash", sa.String(length=255), nullable=False),
        sa.Column("role", sa.String(length=20), nullable=False),
        sa.Column("capacity", sa.Integer(), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("session_version", sa.Integer(), nullable=False),
        sa.Column("photo_version", sa.Integer(), nullable=False),
        _at("created_at"),
        sa.PrimaryKeyConstraint("id", name="pk_agent"),
        sa.ForeignKeyConstraint(["site_id"], ["site.id"], name="fk_agent_site_id_site"),
        sa.UniqueConstraint("site_id", "email", name="uq_agent_site_id_email"),
    )
    op.create_index("ix_agent_site_id", "agent", ["site_id"])

    op.create_table(
        "agentteam",
        _id("agent_id"),
        _id("team_id"),
        sa.PrimaryKeyConstraint("agent_id", "team_id", name="pk_agentteam"),
        sa.ForeignKeyConstraint(["agent_id"], ["agent.id"], name="fk_agentteam_agent_id_agent"),
        sa.ForeignKeyConstraint(["team_id"], ["team.id"], name="fk_agentteam_team_id_team"),
    )

    op.create_table(
        "agentphoto",
        _id("agent_id"),
        sa.Column("content_type", sa.String(length=50), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),  # bytea on PostgreSQL, blob on SQLite
        _at("updated_at"),
        sa.PrimaryKeyConstraint("agent_id", name="pk_agentphoto"),
        sa.ForeignKeyConstraint(["agent_id"], ["agent.id"], name="fk_agentphoto_agent_id_agent"),
    )

    op.create_table(
        "customer",
        _id(),
        _id("site_id"),
        sa.Column("external_id", sa.String(length=200), nullable=True),
        sa.Column("name", sa.String(length=200), nullable=True),
        sa.Column("email", sa.String(length=254), nullable=True),
        sa.Column("verified", sa.Boolean(), nullable=False),
        sa.Column("attributes", sa.JSON(), nullable=False),
        _id("merged_into", nullable=True),
        sa.Column("current_url", sa.String(length=2000), nullable=True),
        sa.Column("current_title", sa.String(length=300), nullable=True),
        sa.Column("locale", sa.String(length=35), nullable=True),
        sa.Column("timezone", sa.String(length=64), nullable=True),
        _at("created_at"),
        _at("last_seen_at"),
        sa.PrimaryKeyConstraint("id", name="pk_customer"),
        sa.ForeignKeyConstraint(["site_id"], ["site.id"], name="fk_customer_site_id_site"),
        sa.UniqueConstraint("site_id", "external_id", name="uq_customer_site_id_external_id"),
    )
    op.create_index("ix_customer_site_id", "customer", ["site_id"])

    op.create_table(
        "conversation",
        _id(),
        _id("site_id"),
        _id("customer_id"),
        sa.Column("status", sa.String(length=10), nullable=False),
        _id("agent_id", nullable=True),
        _id("team_id", nullable=True),
        sa.Column("last_seq", sa.Integer(), nullable=False),
        sa.Column("visitor_read_seq", sa.Integer(), nullable=False),
        sa.Column("agent_read_seq", sa.Integer(), nullable=False),
        sa.Column("offline_email", sa.String(length=254), nullable=True),
        _at("created_at"),
        _at("assigned_at", nullable=True),
        _at("first_agent_reply_at", nullable=True),
        _at("closed_at", nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_conversation"),
        sa.ForeignKeyConstraint(["site_id"], ["site.id"], name="fk_conversation_site_id_site"),
        sa.ForeignKeyConstraint(["customer_id"], ["customer.id"], name="fk_conversation_customer_id_customer"),
        sa.ForeignKeyConstraint(["agent_id"], ["agent.id"], name="fk_conversation_agent_id_agent"),
        sa.ForeignKeyConstraint(["team_id"], ["team.id"], name="fk_conversation_team_id_team"),
    )
    op.create_index("ix_conversation_agent_id", "conversation", ["agent_id"])
    op.create_index("ix_conversation_site_status", "conversation", ["site_id", "status"])
    op.create_index("ix_conversation_customer", "conversation", ["customer_id", "created_at"])

    op.create_table(
        "message",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        _id("conversation_id"),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("author_kind", sa.String(length=10), nullable=False),
        _id("agent_id", nullable=True),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("private", sa.Boolean(), nullable=False),
        sa.Column("client_id", sa.String(length=64), nullable=True),
        _at("created_at"),
        sa.PrimaryKeyConstraint("id", name="pk_message"),
        sa.ForeignKeyConstraint(
            ["conversation_id"], ["conversation.id"], name="fk_message_conversation_id_conversation"
        ),
        sa.ForeignKeyConstraint(["agent_id"], ["agent.id"], name="fk_message_agent_id_agent"),
        # Gap-free seqs and idempotent sends rest on these two.
        sa.UniqueConstraint("conversation_id", "seq", name="uq_message_conversation_id_seq"),
        sa.UniqueConstraint("conversation_id", "client_id", name="uq_message_conversation_id_client_id"),
    )

    op.create_table(
        "rating",
        _id("conversation_id"),
        sa.Column("score", sa.Integer(), nullable=False),
        sa.Column("comment", sa.Text(), nullable=False),
        _at("created_at"),
        sa.PrimaryKeyConstraint("conversation_id", name="pk_rating"),
        sa.ForeignKeyConstraint(
            ["conversation_id"], ["conversation.id"], name="fk_rating_conversation_id_conversation"
        ),
    )

    op.create_table(
        "pageview",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        _id("customer_id"),
        sa.Column("url", sa.String(length=2000), nullable=False),
        sa.Column("title", sa.String(length=300), nullable=False),
        _at("viewed_at"),
        sa.PrimaryKeyConstraint("id", name="pk_pageview"),
        sa.ForeignKeyConstraint(["customer_id"], ["customer.id"], name="fk_pageview_customer_id_customer"),
    )
    op.create_index("ix_pageview_customer", "pageview", ["customer_id", "viewed_at"])

    op.create_table(
        "cannedresponse",
        _id(),
        _id("site_id"),
        sa.Column("shortcut", sa.String(length=40), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        _at("created_at"),
        sa.PrimaryKeyConstraint("id", name="pk_cannedresponse"),
        sa.ForeignKeyConstraint(["site_id"], ["site.id"], name="fk_cannedresponse_site_id_site"),
        sa.UniqueConstraint("site_id", "shortcut", name="uq_cannedresponse_site_id_shortcut"),
    )
    op.create_index("ix_cannedresponse_site_id", "cannedresponse", ["site_id"])


def downgrade() -> None:
    # Children before parents; dropping a table drops its indexes.
    for table in (
        "cannedresponse",
        "pageview",
        "rating",
        "message",
        "conversation",
        "customer",
        "agentphoto",
        "agentteam",
        "agent",
        "team",
        "site",
    ):
        op.drop_table(table)
