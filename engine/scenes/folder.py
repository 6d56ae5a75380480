"""The output folder of a job, held from the start: every durable step on our files in it
(fsync, atomic rename, removal) goes through here, by name relative to the folder as it was
opened, so a folder renamed or replaced while the job runs is noticed and our files are
removed from where they really are.

Durability points: each fsync and rename calls :data:`hook` (if set) with a running count
and what it is about to do, so a test can stop a job at every one of them.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from pathlib import Path

from engine.errors import InputError

# Test hook: called as hook(n, what) before the n-th fsync / rename of this process.
hook: Callable[[int, str], None] | None = None
_points = 0
DIR_FDS = os.name != "nt" and {os.open, os.stat, os.unlink, os.rename} <= os.supports_dir_fd
# Windows: binary fds (no \n -> \r\n in redo files), and FlushFileBuffers needs write access.
BINARY = getattr(os, "O_BINARY", 0)
SYNC_ACCESS = os.O_RDWR if os.name == "nt" else os.O_RDONLY
# Folder fsyncs some file systems (FUSE, SMB) refuse: their renames are as durable as they get.
NO_FOLDER_FSYNC = {errno.EINVAL, errno.ENOTSUP, errno.EBADF}


def durability_point(what: str) -> None:
    global _points
    _points += 1
    if hook is not None:
        hook(_points, what)


class FolderSwappedError(InputError):
    pass


def swapped_error() -> FolderSwappedError:
    return FolderSwappedError("the output folder was moved or replaced while the job ran: nothing "
                         "was written; run the job again into the folder where you want it")


class OutputFolder:
    """``path`` opened once; on POSIX an fd of the folder itself."""

    def __init__(self, path: Path) -> None:
        self.path = Path(os.path.abspath(path))
        self.fd = os.open(self.path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0)) \
            if DIR_FDS else None
        st = os.fstat(self.fd) if self.fd is not None else os.stat(self.path)
        self.ident = (st.st_dev, st.st_ino)

    def swapped(self) -> bool:
        try:
            st = os.stat(self.path)
        except OSError:
            return True
        return (st.st_dev, st.st_ino) != self.ident

    def check(self) -> None:
        if self.swapped():
            raise swapped_error()

    def _at(self, name: str):
        return (name, {"dir_fd": self.fd}) if self.fd is not None else \
            (str(self.path / name), {})

    def open(self, name: str, flags: int, mode: int = 0o644) -> int:
        path, kw = self._at(name)
        return os.open(path, flags | BINARY, mode, **kw)

    def stat(self, name: str) -> os.stat_result:
        path, kw = self._at(name)
        return os.stat(path, **kw)

    def exists(self, name: str) -> bool:
        try:
            self.stat(name)
        except OSError:
            return False
        return True

    def unlink(self, name: str) -> None:
        path, kw = self._at(name)
        try:
            os.unlink(path, **kw)
        except FileNotFoundError:
            pass

    def replace(self, src: str, dst: str) -> None:
        durability_point(f"rename {dst}")
        if self.fd is not None:
            os.replace(src, dst, src_dir_fd=self.fd, dst_dir_fd=self.fd)
        else:
            os.replace(self.path / src, self.path / dst)

    def fsync_file(self, name: str) -> None:
        durability_point(f"fsync {name}")
        fd = self.open(name, SYNC_ACCESS)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def fsync(self) -> None:
        """The folder's entries (a rename or a new file), where the platform can."""
        durability_point("fsync folder")
        if self.fd is not None:
            try:
                os.fsync(self.fd)
            except OSError as exc:
                if exc.errno not in NO_FOLDER_FSYNC:
                    raise

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
