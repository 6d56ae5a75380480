"""`text2earth prompts [--level L] [--style S] [--prefixed] [--json]`: the prompt library
(text2earth_qgis/core/contract/prompt_library.py, the same reader as the dock's examples)."""

from __future__ import annotations

import argparse
import json

from text2earth_qgis.core.contract import prompt_library, scale


def add_parser(sub) -> None:
    p = sub.add_parser("prompts", help="list the example prompts written for each level")
    p.add_argument("--level", type=int, choices=scale.LEVELS, metavar="L",
                   help=f"only this level ({scale.MIN_LEVEL}..{scale.MAX_LEVEL}); default: all")
    p.add_argument("--style", choices=prompt_library.STYLES,
                   help="only Git-10M-style captions or ChatEarthNet-style land-cover text")
    p.add_argument("--prefixed", action="store_true",
                   help="print each as '<L>_GOOGLE_LEVEL_<text>' (a captions file for `eval`)")
    p.add_argument("--json", action="store_true", help="a JSON list of {level, style, text}")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    levels = [args.level] if args.level is not None else list(scale.LEVELS)
    prompts = [p for level in levels
               for p in prompt_library.prompts_for_level(level, args.style)]
    if args.json:
        print(json.dumps([{"level": p.level, "style": p.style, "text": p.text} for p in prompts],
                         indent=2, ensure_ascii=False))
        return 0
    for p in prompts:
        print(f"{p.level}_GOOGLE_LEVEL_{p.text}" if args.prefixed else p.text)
    return 0
