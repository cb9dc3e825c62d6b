"""Integrations: site API keys for server-to-server calls and outgoing webhooks."""
