"""`text2earth COMMAND ...`: builds the parser from the subcommand modules (engine/commands/)
and runs the one asked for; every bad input gives one clear line and a non-zero exit."""

from __future__ import annotations

import argparse
import sys
import warnings

from engine import __version__
from engine.commands import (
    batch,
    edit,
    eval,
    generate,
    label,
    leftovers,
    levels,
    prompts,
    restyle,
    score,
    serve,
)
from engine.errors import Text2EarthError

# Each module adds its subparser(s) with handler=run, in --help's order: adding a command
# is one module and one name here.
COMMAND_MODULES = (generate, serve, edit, leftovers, levels, restyle, batch, prompts, eval,
                   score, label)


class OneLineParser(argparse.ArgumentParser):
    """Bad arguments give one line, like every other bad input, not a page of usage."""

    def error(self, message: str):
        self.exit(2, f"text2earth: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="text2earth",
        description="Generate georeferenced synthetic remote-sensing imagery with Text2Earth.",
    )
    parser.add_argument("--version", action="version", version=f"text2earth {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = parser.add_subparsers(dest="command", required=True)
    for module in COMMAND_MODULES:
        module.add_parser(sub)
    return parser


def check_prompt_args(args) -> None:
    """The service's cap and characters for every command's prompts: one short line, never
    the text back (a pasted file would fill the terminal)."""
    from engine.jobs.prompt_text import check_prompt_text

    for name, what in (("prompt", "--prompt"), ("negative_prompt", "--negative-prompt")):
        if isinstance(getattr(args, name, None), str):
            check_prompt_text(getattr(args, name), what)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    warnings.showwarning = lambda msg, cat, *a, **k: print(f"warning: {msg}", file=sys.stderr)
    try:
        check_prompt_args(args)
        return args.handler(args)
    except Text2EarthError as exc:
        message = str(exc).replace("or allow overwriting", "or pass --overwrite")
        print(f"text2earth: error: {message}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("text2earth: interrupted; nothing was written", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - never a traceback for a user, unless asked
        if args.debug:
            raise
        print(
            f"text2earth: internal error: {type(exc).__name__}: {exc} (run with --debug for the "
            "traceback, and please report it)",
            file=sys.stderr,
        )
        return 1


if __name__ == "__main__":
    sys.exit(main())
