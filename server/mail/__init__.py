"""E-mail follow-up: a durable outbox, mail from the agent's own name, replies that thread back in."""
