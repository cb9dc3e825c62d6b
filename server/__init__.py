"""Nameplate: live chat with real, named human agents."""

__version__ = "0.1.0"
