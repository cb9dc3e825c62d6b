"""full-text search of message bodies; indexes for the supervisor's conversation list

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-05 09:00:00

PostgreSQL: a stored generated column body_tsv = to_tsvector('simple', body) with a GIN index on it. Not an
expression index on to_tsvector(body): that was tried first (bench/README.md) and a phrase, which GIN
cannot answer from the index alone, or a newest-first walk over a site's conversations, had to parse every
body it looked at again, about 3.5 µs each: 80 ms for a phrase in 20,000 of a million messages. The stored
vector is computed once, at insert — the same parse an expression index does then anyway — costs about the
body's size again in the row, and needs no change to the writers (their INSERTs name their columns). The
models leave the column out (SQLite has no such column; migrate.UNMODELLED_NAMES). 'simple': no stemming
and no stop words, so a word matches itself in any language and SQLite's FTS5 (which has neither) finds
the same messages.

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
# Adding the column rewrites the table, computing it for every existing message: the backfill.
_POSTGRES_UP = [
    "ALTER TABLE message ADD COLUMN body_tsv tsvector"
    " GENERATED ALWAYS AS (to_tsvector('simple'::regconfig, body)) STORED",
    "CREATE INDEX ix_message_body_fts ON message USING gin (body_tsv)",
]
_POSTGRES_DOWN = ["DROP INDEX IF EXISTS ix_message_body_fts", "ALTER TABLE message DROP COLUMN IF EXISTS body_tsv"]


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
