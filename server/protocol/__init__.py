"""The wire: client frames in (inbound.py), server frames out (outbound.py), the shared vocabulary, channel names."""
