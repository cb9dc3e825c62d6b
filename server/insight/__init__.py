"""Supervisor insight: the event timeline, the reports computed from it, digests and repeated questions."""
