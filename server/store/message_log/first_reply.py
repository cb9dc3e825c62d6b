"""The first agent reply, recorded by the message log writers in the batch that stores it (an insight event
written in the same transaction as the message, like every other event; see insight/events.py)."""

from __future__ import annotations

from nameplate.protocol.vocabulary import EventKind
from nameplate.store.models import Conversation, InsightEvent

_EVENT = InsightEvent.__tablename__
_CONVERSATION = Conversation.__tablename__

# The message log writers record the first agent reply in the batch that stores it. A conversation whose
# first_agent_reply_at now equals the batch's time got its first reply from this batch (an earlier batch
# left an earlier time there). The value is measured from the conversation's creation: a conversation is
# opened by its visitor's first message (`realtime.visitor`), stored right after it; reading that message
# instead would put the message table into the writer's hot statement.
SQLITE_FIRST_REPLY = f"""
INSERT INTO {_EVENT} (site_id, conversation_id, kind, at, team_id, agent_id, value)
SELECT c.site_id, c.id, '{EventKind.first_reply.value}', c.first_agent_reply_at, c.team_id, c.agent_id,
       (julianday(c.first_agent_reply_at) - julianday(c.created_at)) * 86400.0
FROM {_CONVERSATION} AS c WHERE c.id = ? AND c.first_agent_reply_at = ?
"""

# A CTE for the PostgreSQL batch statement: `advanced` must return id, site_id, team_id, agent_id, created_at
# and first_agent_reply_at; $10 is the batch's time.
POSTGRES_FIRST_REPLY_CTE = f"""
, first_replies AS (
    INSERT INTO {_EVENT} (site_id, conversation_id, kind, at, team_id, agent_id, value)
    SELECT a.site_id, a.id, '{EventKind.first_reply.value}', $10, a.team_id, a.agent_id,
           extract(epoch FROM $10::timestamptz - a.created_at)
    FROM advanced AS a WHERE a.first_agent_reply_at = $10
)
"""
