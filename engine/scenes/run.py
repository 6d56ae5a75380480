"""A scene job from start to output: the output folder held, the output locked, the store
opened (resumed where it can be), the method run, the COG written from the store.

A stopped outpainting or cascade job (crash, power loss) resumes from the windows recorded
in its store and gives the same result as an uninterrupted run (engine.scenes.store); a
cancelled job, one whose write failed (a full disk) or whose folder was moved meanwhile
discards its files at once. Leftovers are listed and cleaned by engine.jobs.leftovers.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import rasterio

from engine.geo.geotiff import (
    check_confined,
    copy_window,
    make_folders,
    remove_folders,
    scratch_profile,
    write_failure,
    write_geotiff_blocks,
)
from engine.geo.tiling import ScenePlan, canvas_transform
from engine.scenes.cascade import run_cascade
from engine.scenes.folder import OutputFolder
from engine.scenes.job import JOINT, OUTPAINT, SceneCallback, SceneJob, tile_window
from engine.scenes.joint import core_windows, run_joint
from engine.scenes.ladder import CASCADE
from engine.scenes.lock import OutputLock
from engine.scenes.outpaint import run_outpaint
from engine.scenes.state import fingerprint, scene_files, scratch_names
from engine.scenes.store import STORE_CACHE_BYTES, WindowStore, cuts_of


def scene_key(job: SceneJob, plan: ScenePlan, method: str, weights_sha: str,
              scheduler: str) -> str:
    fields = [job.prompt, sorted((job.prompts or {}).items()), job.negative_prompt, job.level,
              job.steps, job.guidance, job.seed,
              plan.width, plan.height, plan.tile, plan.overlap, method, weights_sha, scheduler,
              tuple(job.transform), job.crs.to_wkt()]
    if job.ladder is not None:
        fields.append(job.ladder.key())
    return fingerprint(fields)


def run_scene(pipe, job: SceneJob, plan: ScenePlan, method: str, weights_sha: str,
              scheduler: str, tags: dict[str, str], software: str,
              callback: SceneCallback | None = None, resume: bool = True,
              runner: Callable | None = None) -> Path:
    """Generate the scene into its store, then write the output COG from it (``runner``:
    the cascade's, default engine.scenes.cascade.run_cascade)."""
    check_confined(job.out, job.allowed_dirs)  # the scratch can be GBs: same rules as output
    key = scene_key(job, plan, method, weights_sha, scheduler)
    journal = resume and method in (OUTPAINT, CASCADE)  # only these record finished windows
    with held_output(job.out) as folder:
        return _locked(pipe, job, plan, method, key, journal, folder, tags, software,
                       callback, runner or run_cascade)


@contextmanager
def held_output(out: Path) -> Iterator[OutputFolder]:
    """The output's folder made (folders the job made go again if it fails), held
    (engine.scenes.folder) and the output locked (engine.scenes.lock) for the whole job."""
    created = make_folders(out.parent)
    try:
        folder = OutputFolder(out.parent)
    except OSError as exc:
        remove_folders(created)
        raise write_failure(exc, out, out.parent) from exc
    try:
        with OutputLock(out, folder):
            yield folder
    except BaseException:
        if not folder.swapped():
            remove_folders(created)
        raise
    finally:
        folder.close()


def remove_superseded(folder: OutputFolder, out: Path) -> None:
    """Once ``out`` is written: every job's stopped run to it is superseded."""
    for names in scene_files(out):
        for path in (names.scratch, names.state, names.redo):
            folder.unlink(path.name)


def _locked(pipe, job, plan, method, key, journal, folder, tags, software, callback,
            runner) -> Path:
    rects = core_windows(plan) if method == JOINT else [tile_window(w) for w in plan.windows()]
    meta = {"seed": job.seed, "out": job.out.name, "pid": os.getpid(),
            "windows": plan.nx * plan.ny}
    store = WindowStore.resumable(
        folder, scratch_names(job.out, key), key,
        scratch_profile(plan.canvas_width, plan.canvas_height, job.crs,
                        canvas_transform(plan, job.transform)),
        meta, cuts_of(rects), journal)
    try:
        # GDAL's block cache would otherwise grow with the scene (5 % of RAM by default).
        with rasterio.Env(GDAL_CACHEMAX=STORE_CACHE_BYTES):
            if method == OUTPAINT:
                run_outpaint(pipe, job, plan, store, callback)
            elif method == CASCADE:
                runner(pipe, job, store, callback)
            else:
                run_joint(pipe, job, plan, store, callback)
            store.close()
            folder.check()
            col, row = plan.offset
            with store.writing():
                with rasterio.open(store.path) as src:
                    path = write_geotiff_blocks(
                        job.out, plan.width, plan.height,
                        copy_window(src, col, row, plan.width, plan.height),
                        job.crs, job.transform, tags, job.overwrite, software, job.allowed_dirs,
                    )
    except BaseException as exc:
        store.abandon(exc)
        raise
    store.remove()
    remove_superseded(folder, job.out)
    return path

