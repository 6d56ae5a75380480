"""The service's bearer token: read from a file, or created there readable by the user only."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from engine.errors import InputError


def load_or_create_token(path: str | Path) -> str:
    path = Path(path).expanduser()
    try:
        token = path.read_text().strip()
    except FileNotFoundError:
        token = ""
    except OSError as exc:
        raise InputError(f"cannot read the token file {path}: {exc}") from None
    if token:
        return token
    token = secrets.token_urlsafe(32)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    except OSError as exc:
        raise InputError(f"cannot write the token file {path}: {exc}") from None
    with os.fdopen(fd, "w") as fh:
        fh.write(token + "\n")
    os.chmod(path, 0o600)  # an existing empty file may have had wider permissions
    return token
