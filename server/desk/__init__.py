"""The desk: what agents and supervisors read — transcripts and exports, canned replies, the console's look-ups."""
