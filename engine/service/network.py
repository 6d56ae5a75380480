"""Sockets and addresses for the service. No torch here: `serve` checks these at once."""

from __future__ import annotations

import ipaddress
import os
import socket
from pathlib import Path

from engine.errors import InputError


def is_loopback(host: str) -> bool:
    if host.lower() in ("localhost", "localhost."):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host.strip("[]"), port))
    except OSError as exc:
        sock.close()
        if exc.errno in (98, 48, 10048):  # EADDRINUSE on Linux, macOS, Windows
            raise InputError(f"port {port} on {host} is already in use: choose another "
                             "(--port 0 picks a free one)") from None
        raise InputError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def write_port_file(path: str | Path, port: int) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(f"{port}\n")
    os.replace(tmp, path)  # a reader never sees a half-written number


def check_host_and_token(host: str, token_file: str | None) -> None:
    if not is_loopback(host) and not token_file:
        raise InputError(
            f"refusing to serve on {host}, a non-loopback address, without a token: "
            "add --token-file FILE (clients then send 'Authorization: Bearer <token>')"
        )
