"""`text2earth clean [DIR]` and `text2earth resume --list [DIR]`: what stopped jobs left in
an output folder (engine.jobs.leftovers), removed or listed."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from engine.errors import InputError


def add_parser(sub) -> None:
    cl = sub.add_parser("clean", help="remove Text2Earth's leftovers from a folder: temp files "
                                      "of stopped jobs and stopped scenes' scratch")
    cl.add_argument("dir", nargs="?", default=".", help="the output folder (default: here)")
    cl.add_argument("-r", "--recursive", action="store_true", help="also its subfolders")
    cl.set_defaults(handler=clean)
    rs = sub.add_parser("resume", help="stopped scenes that rerunning their command resumes")
    rs.add_argument("--list", action="store_true", required=True,
                    help="list them (a scene resumes when its generate command runs again)")
    rs.add_argument("dir", nargs="?", default=".", help="the output folder (default: here)")
    rs.add_argument("-r", "--recursive", action="store_true", help="also its subfolders")
    rs.set_defaults(handler=resume)


def _folder(text: str) -> Path:
    folder = Path(text).expanduser()
    if not folder.is_dir():
        raise InputError(f"{folder} is not a folder")
    return folder


def clean(args: argparse.Namespace) -> int:
    from engine.jobs.leftovers import remove_stale

    removed = remove_stale(_folder(args.dir), args.recursive, everything=True)
    for path in removed:
        print(path)
    print(f"removed {len(removed)} file(s) left by stopped jobs", file=sys.stderr)
    return 0


def resume(args: argparse.Namespace) -> int:
    from engine.jobs.leftovers import resumable_scenes

    scenes = resumable_scenes(_folder(args.dir), args.recursive)
    for scene in scenes:
        of = f"/{scene.windows}" if scene.windows else ""
        print(f"{scene.out}\t{scene.done}{of} windows done\t{scene.size / 2**20:.1f} MiB scratch"
              f"\t{scene.age_s / 3600:.1f} h ago")
    print(f"{len(scenes)} stopped scene(s): run the same generate command to resume one, or "
          f"`text2earth clean {args.dir}` to remove them", file=sys.stderr)
    return 0
