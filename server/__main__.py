"""Allows `python -m server ...` as a synonym for the `nameplate` command."""

from server.cli import main

main()
