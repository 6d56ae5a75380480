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
MAX_TOKEN_FILE_BYTES = 4096  # a token is tens of bytes; more is the wrong file
NONBLOCK = getattr(os, "O_NONBLOCK", 0)  # (no FIFOs to wait on where it is missing: Windows)


def load_or_create_token(path: str | Path) -> str:
    path = Path(path).expanduser()
    try:
        token = read_token_file(path).strip()
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
        # Non-blocking: a FIFO put there meanwhile fails at once instead of waiting for a reader.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | NONBLOCK, 0o600)
    except OSError as exc:
        raise InputError(f"cannot write the token file {path}: {exc}") from None
    try:
        check_regular(path, os.fstat(fd))
    except InputError:
        os.close(fd)
        raise
    # An existing empty file may have wider permissions: narrow them before the token is in.
    os.fchmod(fd, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(token + "\n")
    return token


def read_token_file(path: Path) -> str:
    """The file's text; a FIFO, device or folder is refused without waiting on it (a FIFO
    opened for reading blocks until someone writes, so `serve` would hang at start)."""
    if path.is_dir():  # Windows cannot open a folder: it would say "Permission denied"
        check_regular(path, path.stat())
    fd = os.open(path, os.O_RDONLY | NONBLOCK | getattr(os, "O_BINARY", 0))
    try:
        check_regular(path, os.fstat(fd))
        with os.fdopen(fd, "rb", closefd=False) as fh:
            data = fh.read(MAX_TOKEN_FILE_BYTES + 1)
    finally:
        os.close(fd)
    if len(data) > MAX_TOKEN_FILE_BYTES:
        raise InputError(f"the token file {path} is larger than {MAX_TOKEN_FILE_BYTES} bytes: "
                         "it holds more than a token; delete it to have a fresh one made")
    return data.decode("utf-8")


def check_regular(path: Path, st: os.stat_result) -> None:
    if stat.S_ISREG(st.st_mode):
        return
    what = ("a FIFO (named pipe)" if stat.S_ISFIFO(st.st_mode)
            else "a folder" if stat.S_ISDIR(st.st_mode)
            else "a socket" if stat.S_ISSOCK(st.st_mode)
            else "a device" if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode)
            else "not a regular file")
    raise InputError(f"the token file {path} is {what}, not a regular file: give the path of a "
                     "file (a missing one is created, readable by you only)")


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
