"""Load and latency benchmarks for Nameplate: real server processes, real websocket clients.

Run `python -m bench --help`; see bench/README.md for what each figure means.
"""
