"""Subcommands that live in their own modules (the CLI's layer: only `engine.cli` imports them).

Each module has `add_parser(sub) -> None`, which adds its subparser and sets `handler=run` on it
with `set_defaults`, and `run(args) -> int`. Importing one must stay cheap (no torch at import):
the CLI imports them all to build its parser.
"""

from __future__ import annotations
