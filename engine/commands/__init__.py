"""The CLI's subcommands, one module each (the CLI's layer: nothing below imports them).

Each command module has `add_parser(sub) -> None`, which adds its subparser(s) and sets
`handler=` on them with `set_defaults`; `engine.cli` lists the modules, builds the parser and
calls the handler. Shared option groups live in `arguments`, what commands print in
`console`. Importing one must stay cheap (no torch at import): the CLI imports them all to
build its parser.
"""

from __future__ import annotations
