"""Websocket endpoints: translate frames to service calls and broker events back to frames."""
