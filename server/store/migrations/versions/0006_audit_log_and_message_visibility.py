"""audit log and message visibility

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-04 04:37:33.980705
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | Sequence[str] | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "auditentry",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("site_id", sa.String(length=32), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("actor_id", sa.String(length=32), nullable=True),
        sa.Column("actor_name", sa.String(length=201), nullable=False),
        sa.Column("action", sa.String(length=40), nullable=False),
        sa.Column("target", sa.String(length=300), nullable=False),
        sa.Column("details", sa.Text(), nullable=False),
        sa.Column("address", sa.String(length=64), nullable=False),
        sa.ForeignKeyConstraint(["site_id"], ["site.id"], name=op.f("fk_auditentry_site_id_site")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_auditentry")),
    )
    with op.batch_alter_table("auditentry", schema=None) as batch_op:
        batch_op.create_index("ix_auditentry_site_at", ["site_id", "at"], unique=False)

    with op.batch_alter_table("message", schema=None) as batch_op:
        batch_op.add_column(sa.Column("visibility", sa.String(length=10), server_default="public", nullable=False))
    # Private messages stored before visibility existed were all private notes.
    op.execute("UPDATE message SET visibility = 'note' WHERE private")


def downgrade() -> None:
    with op.batch_alter_table("message", schema=None) as batch_op:
        batch_op.drop_column("visibility")

    with op.batch_alter_table("auditentry", schema=None) as batch_op:
        batch_op.drop_index("ix_auditentry_site_at")

    op.drop_table("auditentry")
