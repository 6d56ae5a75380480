"""The service's bearer token: read from a file, or created there readable by the user only.

An existing file is used only if it is private to the user and holds a strong token:
a token others could read, or guess, protects nothing, and the service says so rather than
serving behind it.
"""

from __future__ import annotations

import os
import re
import secrets
import stat
from pathlib import Path

from engine.errors import InputError

MIN_TOKEN_CHARS = 32  # secrets.token_urlsafe(32) gives 43
MIN_DISTINCT_CHARS = 10  # 'aaaa...', 'abcabc...' or one repeated word are not secrets
TOKEN_CHARS = re.compile(r"[\x21-\x7e]+")  # printable ASCII, no spaces: one header value


def load_or_create_token(path: str | Path) -> str:
    path = Path(path).expanduser()
    try:
        token = path.read_text().strip()
    except FileNotFoundError:
        token = ""  # nosec B105 - no token file yet: one is made below
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read the token file {path}: {exc}") from None
    if token:
        check_private(path)
        check_strong(path, token)
        return token
    token = secrets.token_urlsafe(32)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    except OSError as exc:
        raise InputError(f"cannot write the token file {path}: {exc}") from None
    # An existing empty file may have wider permissions: narrow them before the token is in.
    os.fchmod(fd, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(token + "\n")
    return token


def check_private(path: Path) -> None:
    """Refuse a token file other users can read or write, or that is not the user's own."""
    if os.name == "nt":  # no POSIX modes: the user profile's ACLs protect it
        return
    st = path.stat()
    mode = stat.S_IMODE(st.st_mode)
    if mode & 0o077:
        raise InputError(
            f"the token file {path} can be read or changed by other users (mode "
            f"{mode:o}): run `chmod 600 {path}`, or delete it to have a fresh token made "
            "(if others may have read it, delete it)"
        )
    if hasattr(os, "getuid") and st.st_uid != os.getuid():
        raise InputError(f"the token file {path} belongs to another user: use your own "
                         "(delete it to have a fresh one made)")


def check_strong(path: Path, token: str) -> None:
    if not TOKEN_CHARS.fullmatch(token):
        raise InputError(f"the token in {path} has spaces or characters an HTTP header cannot "
                         "carry: delete the file to have a fresh token made")
    if len(token) < MIN_TOKEN_CHARS or len(set(token)) < MIN_DISTINCT_CHARS:
        raise InputError(
            f"the token in {path} is too weak ({len(token)} characters, {len(set(token))} "
            f"different): use at least {MIN_TOKEN_CHARS} random characters, or delete the "
            "file to have a fresh one made"
        )
