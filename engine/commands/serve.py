"""`text2earth serve`: the local job service (HTTP + JSON on 127.0.0.1)."""

from __future__ import annotations

import argparse

from engine.commands import arguments
from engine.commands.console import quiet_libraries


def add_parser(sub) -> None:
    srv = sub.add_parser("serve", help="run the local job service (HTTP + JSON)")
    srv.add_argument("--host", default="127.0.0.1", help="address to listen on (loopback)")
    srv.add_argument("--port", type=int, default=0, help="0 picks a free port (printed)")
    srv.add_argument("--port-file", default=None, help="write the port number here")
    srv.add_argument("--model", default=None, help="hub id or local folder (see generate)")
    srv.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    arguments.speed_arguments(srv)
    srv.add_argument("--output-dir", action="append", default=None,
                     help="folder jobs may write to (repeatable; the first takes bare names)")
    srv.add_argument("--token-file", default=None,
                     help="require 'Authorization: Bearer <token>'; the token is read from "
                          "this file, or created there (mode 0600)")
    srv.add_argument("--max-pixels", type=int, default=None, help="refuse larger outputs")
    srv.add_argument("--demo-fallback", action="store_true",
                     help="without real weights, serve the built-in tiny demo checkpoint")
    srv.add_argument("--rank-model", default=None,
                     help="Git-RSCLIP for jobs' scores and candidates, hub id, folder or none "
                          + arguments.RANK_MODEL_DEFAULT)
    srv.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from engine.service.network import check_host_and_token

    check_host_and_token(args.host, args.token_file)  # before seconds of importing torch
    from engine.geo.grid import DEFAULT_MAX_PIXELS
    from engine.service.server import serve

    quiet_libraries()
    args.max_pixels = args.max_pixels or DEFAULT_MAX_PIXELS
    return serve(args)
