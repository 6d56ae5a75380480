"""One run per output: an exclusive lock file beside the target, held for the whole job
(scratch, windows and the final write). A second run to the same output is refused at once,
naming the run that holds it.

The lock file ``.t2e-lock-<hash of the output's name>`` holds the owner's pid and start
time. It is removed by its owner while still locked; whoever locks it checks afterwards that
the name still points to the file it locked (the inode), and starts over if not, so a file
being removed is never taken for a lock. POSIX: flock; Windows: msvcrt.locking of one byte
past the note (Windows cannot remove an open file: there the unlocked file stays, and the
leftovers' sweep removes it).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

from engine.errors import InputError
from engine.geo.geotiff import write_failure
from engine.scenes.folder import OutputFolder

LOCK_PREFIX = ".t2e-lock-"
WINDOWS_LOCK_AT = 1 << 20
LOCK_RETRIES_S = (0.05, 0.05, 0.0)  # then refused

if os.name == "nt":  # pragma: no cover - exercised on Windows only
    import msvcrt

    def _try_lock(fd: int) -> bool:
        os.lseek(fd, WINDOWS_LOCK_AT, os.SEEK_SET)
        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        except OSError:
            return False
        return True

    def _unlock(fd: int) -> None:
        os.lseek(fd, WINDOWS_LOCK_AT, os.SEEK_SET)
        msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)
else:
    import fcntl

    def _try_lock(fd: int) -> bool:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True

    def _unlock(fd: int) -> None:
        fcntl.flock(fd, fcntl.LOCK_UN)


def lock_name(out: Path) -> str:
    tag = hashlib.sha256(Path(out).name.encode("utf-8", "surrogateescape")).hexdigest()[:12]
    return f"{LOCK_PREFIX}{tag}"


def _same_file(fd: int, folder: OutputFolder, name: str) -> bool:
    try:
        st = folder.stat(name)
    except OSError:
        return False
    own = os.fstat(fd)
    return (st.st_dev, st.st_ino) == (own.st_dev, own.st_ino)


def holder(path: Path) -> str:
    """Who holds a lock file, in words."""
    try:
        note = json.loads(Path(path).read_text())
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(note["since"]))
        return f"pid {int(note['pid'])}, running since {since}"
    except (OSError, ValueError, KeyError, TypeError):
        return "another process"


def try_lock_file(folder: OutputFolder, name: str) -> int | None:
    """An fd holding the lock ``name`` in ``folder``, or None if someone else holds it."""
    while True:
        fd = folder.open(name, os.O_RDWR | os.O_CREAT)
        if not _try_lock(fd):
            os.close(fd)
            return None
        if _same_file(fd, folder, name):
            return fd
        os.close(fd)  # removed or replaced by its last owner meanwhile: take the new one


def release_lock_file(folder: OutputFolder, name: str, fd: int) -> None:
    """Remove the lock file while still holding it, then let go."""
    if os.name != "nt":  # Windows cannot remove an open file: the sweep does, later
        try:
            if _same_file(fd, folder, name):
                folder.unlink(name)
        except OSError:
            pass
    try:
        _unlock(fd)
    except OSError:
        pass
    os.close(fd)


class OutputLock:
    """``with OutputLock(out, folder):`` the job owns ``out`` (``folder``: its folder, held)."""

    def __init__(self, out: Path, folder: OutputFolder) -> None:
        self.out, self.folder = Path(out), folder
        self.name = lock_name(self.out)
        self.fd: int | None = None

    def __enter__(self) -> OutputLock:
        try:
            for wait in LOCK_RETRIES_S:  # a sweep or a listing tests a lock for a moment
                fd = try_lock_file(self.folder, self.name)
                if fd is not None:
                    break
                time.sleep(wait)
        except OSError as exc:
            raise write_failure(exc, self.folder.path / self.name, self.folder.path) from exc
        if fd is None:
            raise InputError(f"another Text2Earth run ({holder(self.folder.path / self.name)}) "
                             f"is writing {self.out}: wait for it to finish, or choose another "
                             "output")
        note = json.dumps({"pid": os.getpid(), "since": time.time(), "out": self.out.name})
        try:
            os.ftruncate(fd, 0)
            os.lseek(fd, 0, os.SEEK_SET)
            os.write(fd, note.encode())
        except OSError as exc:
            release_lock_file(self.folder, self.name, fd)
            raise write_failure(exc, self.folder.path / self.name, self.folder.path) from exc
        self.fd = fd
        return self

    def __exit__(self, *exc) -> None:
        if self.fd is not None:
            release_lock_file(self.folder, self.name, self.fd)
            self.fd = None


def held(folder: Path, name: str) -> bool:
    """Whether a live process holds the lock file ``name`` in ``folder`` (our own included)."""
    try:
        fd = os.open(Path(folder) / name, os.O_RDWR)
    except OSError:
        return False
    try:
        if not _try_lock(fd):
            return True
        _unlock(fd)
        return False
    finally:
        os.close(fd)
