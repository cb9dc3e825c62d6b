"""The message log: durable appends with group commit — the batch rules (batch.py) and one writer per engine."""
