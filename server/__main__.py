"""Allows `python -m nameplate ...` as a synonym for the `nameplate` command."""

from nameplate.cli import main

main()
