"""Subcommand modules of the ``histoviz`` CLI (one per area)."""
