"""Broker channel names, in one place so publishers and subscribers cannot drift apart.

- conversation: what the visitor may see (messages, typing, read, agent joined, closed, queue);
- staff: what only agents and supervisors see (private notes, page views, hand-off notes);
- agent: one agent's own events (assigned, unassigned, session ended, load);
- site: the site's live board (queue order, conversations starting, changing, closing);
- customer: a visitor's tabs learn that a new conversation started;
- visitors: what every visitor of a site needs to know (how many agents are online).
"""


def conversation(conversation_id: str) -> str:
    return f"conv:{conversation_id}"


def staff(conversation_id: str) -> str:
    return f"conv:{conversation_id}:staff"


def agent(agent_id: str) -> str:
    return f"agent:{agent_id}"


def site(site_id: str) -> str:
    return f"site:{site_id}"


def customer(customer_id: str) -> str:
    return f"customer:{customer_id}"


def visitors(site_id: str) -> str:
    return f"site:{site_id}:visitors"
