"""message idempotency keys per author: unique (conversation_id, author_kind, client_id)

A client_id is its sender's key for retries. Unique per conversation alone, an agent's message that
reused a client_id the visitor had used (or the other way round) was taken for a retry and not stored.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-04 04:10:00
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0005"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # The new key only relaxes the old one: every stored row already satisfies it.
    with op.batch_alter_table("message", schema=None) as batch_op:
        batch_op.drop_constraint("uq_message_conversation_id_client_id", type_="unique")
        batch_op.create_unique_constraint(
            batch_op.f("uq_message_conversation_id_author_kind_client_id"),
            ["conversation_id", "author_kind", "client_id"],
        )


def downgrade() -> None:
    # Refused by the database if the two sides now share a client_id in a conversation: that is the data
    # the old key could not hold, and it is not deleted to make the downgrade pass.
    with op.batch_alter_table("message", schema=None) as batch_op:
        batch_op.drop_constraint("uq_message_conversation_id_author_kind_client_id", type_="unique")
        batch_op.create_unique_constraint(
            batch_op.f("uq_message_conversation_id_client_id"), ["conversation_id", "client_id"]
        )
