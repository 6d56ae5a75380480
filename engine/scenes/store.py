"""The scratch store of every windowed job: an uncompressed, tiled GeoTIFF beside the output,
read and written window by window, and for a resumable job its journal.

Crash consistency (resumable jobs). A group of windows computed together is committed in
this order, each step durable before the next:
1. the group's blended pixels go to a redo file beside the scratch (a temp name, a checksum
   of its content inside, fsynced, renamed into place, the folder fsynced);
2. they are written into the scratch (GDAL, dataset closed, read back, the file fsynced);
3. the state records the windows as done, with a checksum of every cell they wrote (cells:
   the rectangles cut by all window edges of the plan), atomically and fsynced;
4. the redo file is removed.
A kill anywhere leaves either an untouched scratch and no valid redo (the group is simply
computed again from the same context), or a valid redo whose windows are not yet recorded
(re-applied: the same pixels again), or a recorded group (its redo, if still there, is
discarded). On resume every recorded cell is checked against the checksum its last writer
left; if any does not verify the scratch is discarded and the job starts over: a window
cannot be redone alone, since later windows have overwritten the context it was made from.
A store that starts from other pixels than zeros (an edit's source, an init raster) is
filled before its first window, and the fill fsynced before any redo can exist; a state
with no window recorded and no redo is started over (its fill may be partial).
Joint denoising uses the same store without the journal: a rerun starts afresh.

:func:`run_windows` is the one window loop of every windowed job (outpaint, edits,
extends, restyles, init rasters): the groups not yet done, computed from what the store
holds, committed.

Every failure of a store write becomes the user's error: a full disk DiskFullError, another
failure WriteError, a folder moved or replaced meanwhile InputError (engine.scenes.folder).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from collections.abc import Callable, Iterable, Sequence
from contextlib import contextmanager
from itertools import pairwise
from operator import attrgetter
from pathlib import Path
from typing import TypeVar

import numpy as np
import rasterio
from rasterio._err import CPLE_BaseError
from rasterio.errors import RasterioError
from rasterio.windows import Window

from engine.errors import DiskFullError, GenerationCancelled, Text2EarthError, WriteError
from engine.geo.geotiff import temp_stem, write_failure
from engine.scenes.folder import FolderSwappedError, OutputFolder, swapped_error
from engine.scenes.state import ScratchNames, load_state, save_state

REDO_MAGIC = b"T2E-REDO-1\n"
# GDAL's block cache while a job reads and writes its store (rasterio takes bytes: a bare 64
# would be 64 bytes, no cache at all, and 8x slower).
STORE_CACHE_BYTES = 64 << 20
Write = tuple[str, Window, np.ndarray]  # window key, where, (bands, rows, cols) pixels
W = TypeVar("W")
# Failures after which a store is discarded: a cancel means "discard", a full disk needs
# the space back, a store that failed to keep a window cannot be trusted, a moved folder
# is no place to resume in. Any other (a crash, out of memory) keeps a journaled store.
DISCARD = (GenerationCancelled, DiskFullError, WriteError, FolderSwappedError)


def _digest(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=8).hexdigest()


def cuts_of(windows: list[Window]) -> tuple[list[int], list[int]]:
    """The column and row edges of every window a job writes: they cut the canvas into the
    cells the journal checks."""
    cols = sorted({int(c) for w in windows for c in (w.col_off, w.col_off + w.width)})
    rows = sorted({int(r) for w in windows for r in (w.row_off, w.row_off + w.height)})
    return cols, rows


def _between(cuts: list[int], start: int, end: int) -> list[int]:
    return sorted({start, end, *(c for c in cuts if start < c < end)})


def encode_redo(writes: list[Write]) -> bytes:
    buffer = io.BytesIO()
    meta = [[key, int(w.col_off), int(w.row_off), int(w.width), int(w.height)]
            for key, w, _ in writes]
    arrays = {f"a{i}": np.ascontiguousarray(a) for i, (_, _, a) in enumerate(writes)}
    np.savez(buffer, meta=np.frombuffer(json.dumps(meta).encode(), np.uint8), **arrays)
    payload = buffer.getvalue()
    return REDO_MAGIC + hashlib.sha256(payload).hexdigest().encode() + b"\n" + payload


def decode_redo(data: bytes) -> list[Write] | None:
    """The writes of a redo file, or None if it is torn or not ours."""
    head = len(REDO_MAGIC) + 65
    if not data.startswith(REDO_MAGIC) or len(data) < head:
        return None
    digest, payload = data[len(REDO_MAGIC) : head - 1], data[head:]
    if hashlib.sha256(payload).hexdigest().encode() != digest:
        return None
    try:
        with np.load(io.BytesIO(payload), allow_pickle=False) as npz:
            meta = json.loads(npz["meta"].tobytes())
            return [(key, Window(c, r, w, h), npz[f"a{i}"])
                    for i, (key, c, r, w, h) in enumerate(meta)]
    except (ValueError, KeyError, OSError):
        return None


class WindowStore:
    """Use :meth:`fresh` (no journal) or :meth:`resumable`; always :meth:`close` or
    :meth:`remove` it. ``read``/``write`` take rasterio's arguments, so code written for a
    dataset (Regenerator, copy_window) works on a store too."""

    def __init__(self, folder: OutputFolder, path: Path, names: ScratchNames | None = None,
                 state: dict | None = None, cuts=None, journal: bool = False) -> None:
        self.folder, self.path, self.names = folder, Path(path), names
        self.state, self.cuts, self.journal = state, cuts, journal
        self.done: set[str] = set(state["done"]) if state else set()
        self._ds = None

    # -- opening ------------------------------------------------------------------------

    @classmethod
    def fresh(cls, folder: OutputFolder, path: Path, profile: dict) -> WindowStore:
        store = cls(folder, path)
        with store.writing():
            store._create(profile)
        return store

    @classmethod
    def resumable(cls, folder: OutputFolder, names: ScratchNames, key: str, profile: dict,
                  meta: dict, cuts, journal: bool = True,
                  fill: Callable[[WindowStore], None] | None = None) -> WindowStore:
        """The store of the job ``key`` (named by ``names``): with ``journal``, resumed from
        what verifies, else made anew; without, made anew and never resumed. ``meta`` goes
        into the state (seed, out, pid, windows) for the leftovers' listing; ``fill(store)``
        writes a new store's starting pixels (zeros without it)."""
        meta = {**meta, "resumable": journal}
        state = load_state(names.state, key) if journal else None
        store = cls(folder, names.scratch, names, state, cuts, journal)
        try:
            with store.writing():
                # Nothing recorded and no redo: the scratch may hold part of its fill.
                if state is not None and (state.get("done") or folder.exists(names.redo.name)) \
                        and folder.exists(names.scratch.name):
                    store.state.update(meta)
                    if store._recover():
                        save_state(folder, names.state, store.state)  # its new owner
                        return store
                store.state = {"fingerprint": key, **meta, "done": [], "cells": {}}
                store.done = set()
                folder.unlink(names.redo.name)
                save_state(folder, names.state, store.state)  # the state first: leftovers
                store._create(profile)
            if fill is not None:
                fill(store)
                with store.writing():
                    if journal:  # durable before any redo of a window names it
                        store._close()
                        folder.fsync_file(names.scratch.name)
        except BaseException as exc:
            if store.done:  # recorded windows: kept for a resume unless discarded
                store.abandon(exc)
            else:  # nothing recorded yet: nothing to resume
                store.remove()
            raise
        return store

    def _create(self, profile: dict) -> None:
        self.folder.unlink(self.path.name)
        if not self.journal:  # kept open: the first window or fill writes through it
            self._ds = rasterio.open(self.path, "w+", **profile)
            return
        with rasterio.open(self.path, "w", **profile):
            pass
        # GDAL reports a header it could not write (a full disk) only on stderr.
        rasterio.open(self.path).close()
        self.folder.fsync_file(self.path.name)
        self.folder.fsync()

    def _recover(self) -> bool:
        """Re-apply a valid redo whose windows are not recorded, then check every recorded
        cell; False when the scratch cannot be trusted."""
        redo = self.names.redo
        try:
            data = redo.read_bytes()
        except FileNotFoundError:
            data = None
        if data is not None:
            writes = decode_redo(data)
            if writes and not {key for key, _, _ in writes} <= self.done:
                self._apply(writes)
                self._record(writes)
            self.folder.unlink(redo.name)
        return self._verify()

    def _verify(self) -> bool:
        by_rows: dict[tuple[int, int], list[tuple[int, int, str]]] = {}
        for cell, digest in self.state.get("cells", {}).items():
            c0, r0, c1, r1 = map(int, cell.split(","))
            by_rows.setdefault((r0, r1), []).append((c0, c1, digest))
        try:
            src = rasterio.open(self.path)
        except (RasterioError, CPLE_BaseError):
            return False  # torn before its first window was durable: made anew
        with src:
            for (r0, r1), cells in by_rows.items():
                left = min(c for c, _, _ in cells)
                right = max(c for _, c, _ in cells)
                strip = src.read(window=Window(left, r0, right - left, r1 - r0))
                for c0, c1, digest in cells:
                    if _digest(np.ascontiguousarray(strip[:, :, c0 - left : c1 - left])
                               .tobytes()) != digest:
                        return False
        return True

    # -- pixels -------------------------------------------------------------------------

    def _dataset(self):
        if self._ds is None:
            self._ds = rasterio.open(self.path, "r+")
        return self._ds

    @property
    def profile(self) -> dict:
        return self._dataset().profile

    def read(self, indexes=None, window: Window | None = None) -> np.ndarray:
        with self.writing():
            return self._dataset().read(indexes, window=window)

    def write(self, data: np.ndarray, indexes=None, window: Window | None = None) -> None:
        """A plain write (a non-resumable job's, or filling the store before it runs)."""
        with self.writing():
            self._dataset().write(data, indexes, window=window)

    def commit(self, writes: list[Write]) -> None:
        """A group of windows: durable and recorded (resumable), or just written and read
        back (GDAL reports some failed flushes, a full disk, only on stderr)."""
        with self.writing():
            self.folder.check()
            if not self.journal:
                self._apply(writes)
                self.done.update(key for key, _, _ in writes)
                return
            self._write_redo(writes)
            self._apply(writes)
            self._record(writes)
            self.folder.unlink(self.names.redo.name)

    def _write_redo(self, writes: list[Write]) -> None:
        tmp = temp_stem(self.folder.path).with_suffix(".redo").name
        try:
            fd = self.folder.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
            try:
                data = memoryview(encode_redo(writes))
                while data:
                    data = data[os.write(fd, data):]
            finally:
                os.close(fd)
            self.folder.fsync_file(tmp)
            self.folder.replace(tmp, self.names.redo.name)
            self.folder.fsync()
        finally:
            self.folder.unlink(tmp)

    def _apply(self, writes: list[Write]) -> None:
        self._close()
        with rasterio.open(self.path, "r+") as dst:
            for _, window, data in writes:
                dst.write(data, window=window)
        with rasterio.open(self.path) as src:
            for _, window, data in writes:
                if not np.array_equal(src.read(window=window), data):
                    raise WriteError(f"the job's scratch file {self.path} did not keep what "
                                     "was written to it")
        if self.journal:
            self.folder.fsync_file(self.path.name)

    def _record(self, writes: list[Write]) -> None:
        cols, rows = self.cuts
        cells = self.state.setdefault("cells", {})
        for key, w, data in writes:
            c0, r0 = int(w.col_off), int(w.row_off)
            xs = _between(cols, c0, c0 + int(w.width))
            ys = _between(rows, r0, r0 + int(w.height))
            for y0, y1 in pairwise(ys):
                for x0, x1 in pairwise(xs):
                    part = np.ascontiguousarray(data[:, y0 - r0 : y1 - r0, x0 - c0 : x1 - c0])
                    cells[f"{x0},{y0},{x1},{y1}"] = _digest(part.tobytes())
            self.done.add(key)
        self.state["done"] = sorted(self.done)
        save_state(self.folder, self.names.state, self.state)

    # -- errors and the end -------------------------------------------------------------

    def abandon(self, exc: BaseException) -> None:
        """After ``exc`` stopped the job: a journaled store kept for a resume (a crash, out
        of memory), any other removed (see DISCARD)."""
        if self.journal and not isinstance(exc, DISCARD) and not self.folder.swapped():
            self.close()
        else:
            self.remove()

    @contextmanager
    def writing(self):
        """GDAL's and the OS's errors as the user's: a moved folder, a full disk, or a
        failed write."""
        try:
            yield
        except Text2EarthError:
            raise
        except (OSError, RasterioError, CPLE_BaseError) as exc:
            if self.folder.swapped():
                raise swapped_error() from exc
            raise write_failure(exc, self.path, self.folder.path) from exc

    def _close(self) -> None:
        if self._ds is not None:
            ds, self._ds = self._ds, None
            ds.close()

    def close(self) -> None:
        try:
            self._close()
        except (RasterioError, CPLE_BaseError, OSError):
            pass

    def remove(self) -> None:
        """The scratch and its journal, from the folder where they really are."""
        self.close()
        for path in (self.path, *((self.names.state, self.names.redo) if self.names else ())):
            try:
                self.folder.unlink(path.name)
            except OSError:
                pass


class Bands:
    """Some of a store's bands, read and written as if they were all of it: an edit's pixels
    beside the band that records which of them were made (one store, one journal)."""

    def __init__(self, store: WindowStore, indexes: Sequence[int]) -> None:
        self.store, self.indexes = store, list(indexes)

    def _map(self, indexes):
        if indexes is None:
            return self.indexes
        if isinstance(indexes, int):
            return self.indexes[indexes - 1]
        return [self.indexes[i - 1] for i in indexes]

    def read(self, indexes=None, window: Window | None = None) -> np.ndarray:
        return self.store.read(self._map(indexes), window=window)

    def write(self, data: np.ndarray, indexes=None, window: Window | None = None) -> None:
        self.store.write(data, self._map(indexes), window=window)

    def writing(self):
        return self.store.writing()


def run_windows(store: WindowStore, fronts: Iterable[Sequence[W]],
                compute: Callable[[list[W]], list[Write]], size: int = 1,
                key: Callable[[W], str] = attrgetter("key")) -> None:
    """The window loop: in each front (windows that do not depend on each other), those not
    yet done, ``size`` at a time, computed (reading their context from the store) and
    committed; a resumed store skips what its journal recorded."""
    for front in fronts:
        todo = [w for w in front if key(w) not in store.done]
        for start in range(0, len(todo), size):
            store.commit(compute(todo[start : start + size]))
