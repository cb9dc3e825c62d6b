"""full-text search of message bodies; indexes for the supervisor's conversation list

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-05 09:00:00

PostgreSQL: a GIN index on the expression to_tsvector('simple', body). An expression index rather than a
stored generated column: the message row (written on the hot path by the message log's one-statement batch)
stays as it is, the models and both writers are unchanged, and the tsvector is not kept twice (heap and
index). The price is that a recheck recomputes to_tsvector for the rows it looks at, which the searches in
bench/search.py measure. 'simple': no stemming and no stop words, so a word matches itself in any language
and SQLite's FTS5 (which has neither) finds the same messages.

SQLite: an FTS5 table over message.body with external content (the text is not stored twice), kept in step
with message by triggers, so every insert path — the message log's raw-SQL writer included — is indexed.
`remove_diacritics 0` because PostgreSQL's 'simple' configuration keeps accents: "díaz" does not find
"diaz" on either engine. A later migration that rebuilds the message table on SQLite (batch_alter_table
copies, drops and renames it) drops these triggers with it and must create them again;
tests/integration/test_search.py checks that they exist at head.

Both: the conversation list walks a site's conversations newest first (ORDER BY created_at DESC, id DESC)
with optional status, team and date filters; one index per filter shape lets it read the first page without
sorting. The agent filter ("worked on": holds it now or wrote in it) looks messages up by agent.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | Sequence[str] | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_SQLITE_UP = [
    "CREATE VIRTUAL TABLE message_fts USING fts5(body, content='message', content_rowid='id',"
    " tokenize='unicode61 remove_diacritics 0')",
    "CREATE TRIGGER message_fts_insert AFTER INSERT ON message BEGIN"
    " INSERT INTO message_fts (rowid, body) VALUES (new.id, new.body); END",
    # External content: FTS5 must be told the old text to remove its tokens.
    "CREATE TRIGGER message_fts_delete AFTER DELETE ON message BEGIN"
    " INSERT INTO message_fts (message_fts, rowid, body) VALUES ('delete', old.id, old.body); END",
    "CREATE TRIGGER message_fts_update AFTER UPDATE OF body ON message BEGIN"
    " INSERT INTO message_fts (message_fts, rowid, body) VALUES ('delete', old.id, old.body);"
    " INSERT INTO message_fts (rowid, body) VALUES (new.id, new.body); END",
    # The backfill: index every message stored before this migration.
    "INSERT INTO message_fts (message_fts) VALUES ('rebuild')",
]
_SQLITE_DOWN = [
    "DROP TRIGGER IF EXISTS message_fts_update",
    "DROP TRIGGER IF EXISTS message_fts_delete",
    "DROP TRIGGER IF EXISTS message_fts_insert",
    "DROP TABLE IF EXISTS message_fts",
]
# Building the index reads every existing message: the backfill.
_POSTGRES_UP = [
    "CREATE INDEX ix_message_body_fts ON message USING gin (to_tsvector('simple'::regconfig, body))",
]
_POSTGRES_DOWN = ["DROP INDEX IF EXISTS ix_message_body_fts"]


def upgrade() -> None:
    sqlite = op.get_bind().dialect.name == "sqlite"
    for statement in _SQLITE_UP if sqlite else _POSTGRES_UP:
        op.execute(statement)
    with op.batch_alter_table("conversation", schema=None) as batch_op:
        # (site_id, status, created_at, id) serves what (site_id, status) did, and the list filtered by status.
        batch_op.drop_index("ix_conversation_site_status")
        batch_op.create_index("ix_conversation_site_status", ["site_id", "status", "created_at", "id"], unique=False)
        batch_op.create_index("ix_conversation_site_created", ["site_id", "created_at", "id"], unique=False)
        batch_op.create_index("ix_conversation_site_team", ["site_id", "team_id", "created_at", "id"], unique=False)
    with op.batch_alter_table("message", schema=None) as batch_op:
        batch_op.create_index(
            "ix_message_agent",
            ["agent_id", "conversation_id"],
            unique=False,
            postgresql_where=sa.text("agent_id IS NOT NULL"),
            sqlite_where=sa.text("agent_id IS NOT NULL"),
        )


def downgrade() -> None:
    with op.batch_alter_table("message", schema=None) as batch_op:
        batch_op.drop_index("ix_message_agent")
    with op.batch_alter_table("conversation", schema=None) as batch_op:
        batch_op.drop_index("ix_conversation_site_team")
        batch_op.drop_index("ix_conversation_site_created")
        batch_op.drop_index("ix_conversation_site_status")
        batch_op.create_index("ix_conversation_site_status", ["site_id", "status"], unique=False)
    sqlite = op.get_bind().dialect.name == "sqlite"
    for statement in _SQLITE_DOWN if sqlite else _POSTGRES_DOWN:
        op.execute(statement)
