"""Generic parts with no domain of their own: background tasks, rate limits, the refreshing cache."""
