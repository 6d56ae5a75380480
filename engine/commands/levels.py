"""`text2earth levels [--lat L]`: the level table (nominal and ground metres per pixel)."""

from __future__ import annotations

import argparse

from engine.errors import InputError
from text2earth_qgis.core.contract import scale


def add_parser(sub) -> None:
    lv = sub.add_parser("levels", help="print the level table")
    lv.add_argument("--lat", type=float, default=0.0, help="latitude for ground m/px")
    lv.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    try:
        rows = scale.level_table(args.lat)
    except ValueError as exc:
        raise InputError(str(exc)) from None
    ground_header = f"ground m/px at {args.lat:.2f} deg"
    print(f"{'level':>5}  {'nominal m/px':>12}  {ground_header:>24}")
    for level, nominal, ground in rows:
        print(f"{level:>5}  {nominal:>12g}  {ground:>24.4f}")
    return 0
