"""Chat: a conversation's life in the store — messages, read marks, typing, assignment, close, rating, history."""
