"""Routing: the queue, pairing visitors with agents (plan.py, pure), transfers, requeues, presence, waits."""
