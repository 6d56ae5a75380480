"""Scenes larger than one model tile, built window by window in bounded memory.

Two methods, written into the file's tags:
- ``outpaint`` (the inpainting checkpoint, the authors' "unbounded scene construction"): windows
  in row order, each conditioned on the strips it shares with windows already made (kept),
  generating the rest with the same prompt and level; the shared strips are feathered.
- ``joint`` (only the text-to-image checkpoint): MultiDiffusion-style joint denoising: at every
  step each window's noise prediction is averaged, with feathered weights, into one latent
  canvas (1/64 of the pixels, 4 channels: the only canvas-sized thing held).

Pixels go to an uncompressed scratch GeoTIFF beside the output (``.t2e-scene-<hash>.tif``,
with its state in ``.t2e-scene-<hash>.json``), one window at a time, each read back; the
output COG is copied from it at the end. A stopped outpainting job (crash, power loss)
resumes from the windows already in the scratch file and gives the same result as an
uninterrupted run, because every window reads its context back from that file; a cancelled
job, or one whose write failed (a full disk), discards the scratch. Leftovers are listed and
cleaned by engine.jobs.leftovers.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
import torch
from affine import Affine
from rasterio.windows import Window

from engine.errors import DiskFullError, GenerationCancelled, WriteError
from engine.geo.geotiff import (
    SCRATCH_PREFIX,
    check_confined,
    checked_writes,
    copy_window,
    make_folders,
    open_scratch,
    remove_folders,
    temp_stem,
    write_failure,
    write_geotiff_blocks,
)
from engine.geo.tiling import (
    ScenePlan,
    canvas_transform,
    joint_weights,
    outpaint_blend,
    outpaint_mask,
    tile_seed,
)
from engine.jobs.cascade_ladder import CASCADE
from engine.jobs.window_batch import (
    batch_size_for,
    chunks,
    current_executor,
    joint_noise,
    wavefronts,
)
from engine.model.pipeline import LATENT_DTYPE, resolve_prompt_level

OUTPAINT, JOINT = "outpaint", "joint"
SCENE_GDAL_CACHE_MB = 64
# diffusers' step callback (pipe, step index, timestep, tensors); for scenes the tensors dict
# also carries "tile" (from 1) and "tiles", so one callback serves single images and scenes.
SceneCallback = Callable[[object, int, object, dict], dict]


@dataclass(frozen=True)
class SceneJob:
    prompt: str
    negative_prompt: str | None
    level: int
    steps: int
    guidance: float
    seed: int
    out: Path
    crs: object  # pyproj CRS
    transform: Affine  # the output grid's
    overwrite: bool
    allowed_dirs: tuple | None
    prompts: dict | None = None  # window key -> prompt, from prompt regions
    window_batch: int | None = None  # windows per UNet call; None: as many as memory allows
    ladder: object | None = None  # the cascade method's levels (engine.jobs.cascade_ladder)


def scratch_paths(out: Path) -> tuple[Path, Path]:
    """The scratch canvas and the resume state of ``out``: short names (a hash of the
    output's name), so any name the file system accepts for the output fits them too."""
    out = Path(out)
    tag = hashlib.sha256(out.name.encode("utf-8", "surrogateescape")).hexdigest()[:12]
    return (out.with_name(f"{SCRATCH_PREFIX}{tag}.tif"),
            out.with_name(f"{SCRATCH_PREFIX}{tag}.json"))


def fingerprint(job: SceneJob, plan: ScenePlan, method: str, weights_sha: str,
                scheduler: str) -> str:
    """What must be equal for a scratch file to be resumed: everything that shapes pixels."""
    fields = [job.prompt, sorted((job.prompts or {}).items()), job.negative_prompt, job.level,
              job.steps, job.guidance, job.seed,
              plan.width, plan.height, plan.tile, plan.overlap, method, weights_sha, scheduler,
              tuple(job.transform), job.crs.to_wkt()]
    if job.ladder is not None:
        fields.append(job.ladder.key())
    return hashlib.sha256(repr(fields).encode()).hexdigest()


def _load_state(path: Path, key: str) -> set[str] | None:
    try:
        state = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return set(state.get("done", [])) if state.get("fingerprint") == key else None


def _save_state(path: Path, key: str, done: set[str], seed: int, out: Path | None = None,
                resumable: bool = True, windows: int | None = None) -> None:
    """Write the state atomically; it names its output and owner, so leftovers can be listed
    (``text2earth resume --list``) and told stale (engine.jobs.leftovers)."""
    state = {"fingerprint": key, "seed": seed, "done": sorted(done)}
    try:
        state.update({k: v for k, v in json.loads(path.read_text()).items()
                      if k in ("out", "pid", "resumable", "windows")})
    except (OSError, ValueError, AttributeError):
        pass
    if out is not None:
        state.update(out=out.name, pid=os.getpid(), resumable=resumable, windows=windows)
    tmp = temp_stem(path.parent).with_suffix(".state.json")
    try:
        with open(tmp, "w") as fh:
            fh.write(json.dumps(state))
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        raise write_failure(exc, path, path.parent) from exc
    finally:
        tmp.unlink(missing_ok=True)


def saved_seed(out: Path) -> int | None:
    """The seed of a stopped run of this output, so rerunning without --seed resumes it."""
    try:
        seed = json.loads(scratch_paths(Path(out))[1].read_text()).get("seed")
    except (OSError, ValueError, AttributeError):
        return None
    return seed if isinstance(seed, int) else None


def _read(scratch: Path, col: int, row: int, size: int) -> np.ndarray:
    with rasterio.open(scratch) as src:
        return np.moveaxis(src.read(window=Window(col, row, size, size)), 0, 2)


def _write(scratch: Path, array: np.ndarray, col: int, row: int) -> None:
    """Write a window to the scratch and read it back: GDAL reports a write that failed
    while flushing (a full disk) only on stderr, and a resumed run trusts what is here."""
    window = Window(col, row, array.shape[1], array.shape[0])
    pixels = np.moveaxis(array, 2, 0)
    with rasterio.open(scratch, "r+") as dst:
        dst.write(pixels, window=window)
    with rasterio.open(scratch) as src:
        if not np.array_equal(src.read(window=window), pixels):
            raise WriteError(f"the scene's scratch file {scratch} did not keep what was "
                             "written to it")


def run_outpaint(pipe, job: SceneJob, plan: ScenePlan, scratch: Path, state: Path, key: str,
                 done: set[str], callback: SceneCallback | None) -> None:
    """Windows by wavefront, several per UNet call: the same result as row order (see
    engine.jobs.window_batch for why), each window seeded from its position."""
    windows = plan.windows()
    fronts = wavefronts(plan)
    executor = current_executor()  # elsewhere (Ray workers): a whole wavefront at a time
    size = (max(map(len, fronts)) if executor is not None
            else batch_size_for(pipe, plan.tile, job.guidance > 1.0, job.window_batch))
    for front in fronts:
        for group in chunks([w for w in front if w.key not in done], size):
            existing = [_read(scratch, w.col, w.row, plan.tile) for w in group]

            def on_step(p, i, t, tensors, group=group):
                if callback is not None:  # per window, as if they had run one by one
                    for k, w in enumerate(group):
                        callback(p, i, t, {**tensors, "latents": tensors["latents"][k : k + 1],
                                           "tile": w.index + 1, "tiles": len(windows)})
                return tensors

            prompts = [resolve_prompt_level((job.prompts or {}).get(w.key, job.prompt),
                                            job.level)[1] for w in group]
            masks = [outpaint_mask(plan, w) for w in group]
            seeds = [tile_seed(job.seed, w.ix, w.iy) for w in group]
            if executor is not None:
                images = executor.outpaint(pipe, job, prompts, existing, masks, seeds)
            else:
                images = pipe.inpaint_batch(
                    prompts, existing, masks, job.level, job.negative_prompt, job.steps,
                    job.guidance, [torch.Generator("cpu").manual_seed(s) for s in seeds],
                    callback_on_step_end=on_step,
                ).images
            for w, image, before in zip(group, images, existing, strict=True):
                weight = outpaint_blend(plan, w)[..., None]
                blended = weight * image + (1.0 - weight) * before
                _write(scratch, np.rint(blended).astype(np.uint8), w.col, w.row)
                done.add(w.key)
            _save_state(state, key, done, job.seed)


@torch.no_grad()
def run_joint(pipe, job: SceneJob, plan: ScenePlan, scratch: Path,
              callback: SceneCallback | None) -> None:
    device = pipe._execution_device
    pipe.begin_run()
    do_cfg = job.guidance > 1.0
    by_prompt: dict[str, torch.Tensor] = {}

    def embeds_for(prompt: str) -> torch.Tensor:
        if prompt not in by_prompt:
            by_prompt[prompt] = pipe.condition(prompt, job.negative_prompt, job.level,
                                               job.guidance)[0]
        return by_prompt[prompt]

    labels = pipe.level_labels(job.level, do_cfg, device)
    f = pipe.vae_scale_factor
    lt, ls = plan.tile // f, plan.stride // f
    windows = plan.windows()

    # Initial noise cell by cell from each window's seed: the same position, the same noise.
    channels = pipe.num_channels_latents
    draw = torch.empty((1, channels, plan.canvas_height // f, plan.canvas_width // f),
                       dtype=LATENT_DTYPE)
    for w in windows:
        r0, c0 = w.iy * ls, w.ix * ls
        r1 = draw.shape[2] if w.iy == plan.ny - 1 else r0 + ls
        c1 = draw.shape[3] if w.ix == plan.nx - 1 else c0 + ls
        gen = torch.Generator("cpu").manual_seed(tile_seed(job.seed, w.ix, w.iy))
        draw[:, :, r0:r1, c0:c1] = torch.randn((1, channels, r1 - r0, c1 - c0),
                                               generator=gen, dtype=LATENT_DTYPE)
    pipe.scheduler.set_timesteps(job.steps, device=device)
    latents = pipe.prepare_latents(1, channels, plan.canvas_height, plan.canvas_width,
                                   LATENT_DTYPE, device, None, latents=draw)
    weight = torch.from_numpy(joint_weights(lt, plan.overlap // f)).to(device, LATENT_DTYPE)
    groups = chunks(windows, batch_size_for(pipe, plan.tile, do_cfg, job.window_batch))

    def offsets(w) -> tuple[int, int]:
        return w.iy * ls, w.ix * ls

    def window_embeds(w) -> torch.Tensor:
        return embeds_for((job.prompts or {}).get(w.key, job.prompt))

    for i, t in enumerate(pipe.scheduler.timesteps):
        total = torch.zeros_like(latents)
        weights = torch.zeros_like(latents[:, :1])
        for group in groups:  # several windows per UNet call; sums in window order as before
            noises = joint_noise(pipe, latents, group, offsets, lt, t, window_embeds, labels,
                                 job.guidance)
            for w, noise in zip(group, noises, strict=True):
                r, c = offsets(w)
                total[:, :, r : r + lt, c : c + lt] += noise * weight
                weights[:, :, r : r + lt, c : c + lt] += weight
        latents = pipe.scheduler.step(total / weights, t, latents, return_dict=False)[0]
        # All windows advance together: one pass over the canvas, reported as one tile.
        latents = pipe.end_step(callback, i, t, {"latents": latents, "tile": 1, "tiles": 1},
                                job.steps)["latents"]

    # Decode window by window; each writes only its core, and the cores tile the canvas.
    for w in windows:
        if pipe.interrupt:
            raise GenerationCancelled("cancelled while decoding")
        r, c = w.iy * ls, w.ix * ls
        image = pipe.decode(latents[:, :, r : r + lt, c : c + lt])[0]
        col0, row0, col1, row1 = plan.core(w)
        core = image[row0 - w.row : row1 - w.row, col0 - w.col : col1 - w.col]
        _write(scratch, core, col0, row0)


def run_scene(pipe, job: SceneJob, plan: ScenePlan, method: str, weights_sha: str,
              scheduler: str, tags: dict[str, str], software: str,
              callback: SceneCallback | None = None, resume: bool = True,
              runner: Callable | None = None) -> Path:
    """Generate the scene into the scratch canvas, then write the output COG from it
    (``runner``: the cascade method's, engine.jobs.cascade.run_cascade)."""
    scratch, state = scratch_paths(job.out)
    check_confined(job.out, job.allowed_dirs)  # the scratch can be GBs: same rules as output
    key = fingerprint(job, plan, method, weights_sha, scheduler)
    done = _load_state(state, key) if resume and scratch.is_file() else None
    # Only outpainting and cascades record finished windows; only a resumable run keeps its
    # scratch.
    keep_on_failure = resume and method in (OUTPAINT, CASCADE)
    created: list[Path] = []
    try:
        created = make_folders(job.out.parent)
        reuse = bool(done)
        done = done or set()
        # The state first: a scratch without its state is never a run in progress, so a
        # start-up sweep may remove it (engine.jobs.leftovers).
        _save_state(state, key, done, job.seed, job.out, keep_on_failure, plan.nx * plan.ny)
        with checked_writes(scratch):
            open_scratch(scratch, plan.canvas_width, plan.canvas_height, job.crs,
                         canvas_transform(plan, job.transform), reuse=reuse).close()
        # GDAL's block cache would otherwise grow with the scene (5 % of RAM by default).
        with rasterio.Env(GDAL_CACHEMAX=SCENE_GDAL_CACHE_MB):
            path = _build(pipe, job, plan, method, scratch, state, key, done, callback, tags,
                          software, runner)
    except BaseException as exc:
        # A cancel means "discard", and so does a failed write (a full disk needs the space
        # back, and a scratch that failed to keep a window cannot be trusted); another
        # crash keeps the scratch for a resume where one can work.
        # A state is kept only with its scratch.
        if isinstance(exc, (GenerationCancelled, DiskFullError, WriteError)) \
                or not keep_on_failure or not scratch.is_file():
            scratch.unlink(missing_ok=True)
            state.unlink(missing_ok=True)
            remove_folders(created)
        raise
    scratch.unlink(missing_ok=True)
    state.unlink(missing_ok=True)
    return path


def _build(pipe, job, plan, method, scratch, state, key, done, callback, tags, software,
           runner) -> Path:
    col, row = plan.offset
    with checked_writes(scratch):
        if method == OUTPAINT:
            run_outpaint(pipe, job, plan, scratch, state, key, done, callback)
        elif method == CASCADE:  # engine.jobs.cascade.run_cascade (it builds on this module)
            runner(pipe, job, scratch, state, key, done, callback)
        else:
            run_joint(pipe, job, plan, scratch, callback)
    with rasterio.open(scratch) as src:
        return write_geotiff_blocks(
            job.out, plan.width, plan.height,
            copy_window(src, col, row, plan.width, plan.height),
            job.crs, job.transform, tags, job.overwrite, software, job.allowed_dirs,
        )
