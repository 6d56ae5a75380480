"""N candidates of one job, ranked by Git-RSCLIP: the best is the output.

Seeds: candidate 1 uses the job's seed (``--candidates 1`` is the plain job) and candidate K
the seed that NumPy's SeedSequence draws from (job seed, K), so every candidate can be
reproduced alone with ``--seed``. Single images are denoised as one batch where memory allows
(engine.scenes.window_batch's rule), each item with its own generator, so a batched candidate is
the same image as its seed's single run up to the floating-point effect of the batch size on
the kernels (measured: at most 2 levels of 255 in fp32 on a CPU; a batch of one is the plain
job's very call). Scenes run as N whole scenes, ranked whole.

Ranking: highest score first, ties in generation order; without a rank model, generation
order, and every candidate is kept (nobody can tell which is best). Files: the best at the
job's output, the others as ``<stem>_c<K>.tif`` beside it when kept. Each written file's tags
record its own seed and score (TEXT2EARTH_SEED, TEXT2EARTH_RSCLIP_SCORE), which candidate it
is, and all candidates' seeds and scores (TEXT2EARTH_CANDIDATES, best first).

This module knows nothing of jobs.generate (which calls it): no import cycle.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
import torch
from pyproj import CRS
from rasterio.windows import Window

from engine.errors import InputError
from engine.geo.geotiff import TAG_PREFIX, check_output_path, write_geotiff, write_geotiff_blocks
from engine.jobs.output_score import score_tags
from engine.quality.raster_rgb import score_raster
from engine.quality.scoring import score_images
from engine.scenes.window_batch import batch_size_for, chunks

MAX_CANDIDATES = 8
MAX_SEED = 2**32 - 1
COPY_ROWS = 512


@dataclass
class Candidate:
    index: int  # 1-based, generation order
    seed: int
    score: float | None = None
    path: Path | None = None  # where it was written (None: not kept)

    def entry(self) -> dict:
        return {"index": self.index, "seed": self.seed, "score": self.score,
                "path": None if self.path is None else str(self.path)}


@dataclass
class Ranked:
    path: Path  # the best candidate's file: the job's output
    score: float | None
    candidates: list[Candidate]  # best first
    tags: dict[str, str]  # the output's tags


def check_candidates(n: int) -> None:
    if not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= MAX_CANDIDATES:
        raise InputError(f"candidates must be an integer in 1..{MAX_CANDIDATES}, got {n!r}")


def candidate_seeds(seed: int, n: int) -> list[int]:
    """The job's seed, then one seed per further candidate derived from (seed, K)."""
    seeds = [seed]
    for k in range(2, n + 1):
        state = np.random.SeedSequence([seed, k]).generate_state(1, np.uint64)[0]
        seeds.append(int(state % (MAX_SEED + 1)))
    return seeds


def candidate_path(out: str | Path, index: int) -> Path:
    out = Path(out).expanduser()
    return out.with_name(f"{out.stem}_c{index}{out.suffix}")


def check_candidate_paths(out: str | Path, n: int, keep: bool, overwrite: bool) -> None:
    """Every file the job may write must be free, before any model work (scenes write each
    candidate as ``_c<K>`` first, kept or not: ``keep`` True)."""
    if n > 1 and keep:
        for k in range(1, n + 1):
            check_output_path(candidate_path(out, k), overwrite)


@torch.no_grad()
def render_batch(pipe, text: str, negative_prompt: str | None, level: int, height: int,
                 width: int, steps: int, guidance: float, seeds: list[int],
                 callback=None) -> list[np.ndarray]:
    """N images of one prompt in one batch, item i drawn from its own generator (seeds[i]),
    as Text2EarthPipeline.__call__ draws a single one."""
    pipe.check_inputs(text, height, width, steps, guidance)
    pipe.begin_run()
    embeds, labels = pipe.condition_batch([text] * len(seeds), negative_prompt, level, guidance)
    generators = [torch.Generator("cpu").manual_seed(s) for s in seeds]
    images = pipe.text_to_image(embeds, labels, len(seeds), height, width, steps, guidance,
                                generators, callback=callback)
    pipe.maybe_free_model_hooks()
    return list(images)


def render_candidates(pipe, text: str, negative_prompt: str | None, level: int, grid,
                      steps: int, guidance: float, seeds: list[int], callback=None,
                      batch: int | None = None) -> list[np.ndarray]:
    """Each seed's image cropped to the grid, in batches that fit the free memory."""
    side = max(grid.canvas_width, grid.canvas_height)
    size = batch_size_for(pipe, side, guidance > 1.0, batch)
    col, row = grid.canvas_offset
    images = []
    for group in chunks(seeds, size):
        if len(group) == 1:  # exactly the plain job's call
            out = pipe(text, level=level, negative_prompt=negative_prompt,
                       height=grid.canvas_height, width=grid.canvas_width,
                       num_inference_steps=steps, guidance_scale=guidance,
                       generator=torch.Generator("cpu").manual_seed(group[0]),
                       callback_on_step_end=callback)
            made = [out.images[0]]
        else:
            made = render_batch(pipe, text, negative_prompt, level, grid.canvas_height,
                                grid.canvas_width, steps, guidance, group, callback)
        images.extend(m[row : row + grid.height, col : col + grid.width] for m in made)
    return images


def order(candidates: list[Candidate]) -> list[Candidate]:
    """Best first: highest score, ties (and no scores) in generation order."""
    return sorted(candidates, key=lambda c: (-(c.score if c.score is not None else -1.0),
                                             c.index))


def candidate_tags(tags: dict[str, str], ranked: list[Candidate], this: Candidate,
                   rank_model_id: str | None) -> dict[str, str]:
    tags = dict(tags)
    tags[f"{TAG_PREFIX}SEED"] = str(this.seed)
    if len(ranked) > 1:
        tags[f"{TAG_PREFIX}CANDIDATE"] = str(this.index)
    tags[f"{TAG_PREFIX}CANDIDATES"] = json.dumps(
        [{"index": c.index, "seed": c.seed, "score": c.score} for c in ranked])
    if this.score is not None:
        tags.update(score_tags(this.score, rank_model_id or ""))
    return tags


def _placed(ranked: list[Candidate], out: Path, keep: bool) -> list[tuple[Candidate, Path]]:
    """Where each written candidate goes: the best at ``out``, the kept others beside it."""
    places = [(ranked[0], out)]
    if keep:
        places += [(c, candidate_path(out, c.index)) for c in ranked[1:]]
    return places


def _model_id(ranker) -> str | None:
    return None if ranker is None else ranker.checkpoint.model_id


def rank_images(images: list[np.ndarray], seeds: list[int], ranker, prompt: str,
                out: str | Path, keep: bool, tags: dict[str, str],
                write: Callable[[Path, np.ndarray, dict[str, str]], Path]) -> Ranked:
    """Score the images, write the best to ``out`` (and the kept others); all or nothing."""
    candidates = [Candidate(k + 1, s) for k, s in enumerate(seeds)]
    if ranker is not None:
        for c, score in zip(candidates, score_images(ranker, images, prompt), strict=True):
            c.score = score.score
    ranked = order(candidates)
    keep = keep or (ranker is None and len(candidates) > 1)
    written: list[Path] = []
    try:
        # The others first, the best last: its name appearing means the job is done.
        for c, path in reversed(_placed(ranked, Path(out).expanduser(), keep)):
            c.path = write(path, images[c.index - 1],
                           candidate_tags(tags, ranked, c, _model_id(ranker)))
            written.append(c.path)
    except BaseException:
        for path in written:
            path.unlink(missing_ok=True)
        raise
    best = ranked[0]
    return Ranked(best.path, best.score, ranked,
                  candidate_tags(tags, ranked, best, _model_id(ranker)))


def single_images(pipe, request, grid, text: str, seed: int, tags: dict[str, str],
                  software: str, callback=None) -> Ranked:
    """The hook of jobs.generate for one-canvas jobs with candidates or a rank model."""
    seeds = candidate_seeds(seed, request.candidates)
    keep = request.keep_candidates or (request.ranker is None and request.candidates > 1)
    check_candidate_paths(request.out, request.candidates, keep, request.overwrite)
    images = render_candidates(pipe, text, request.negative_prompt, grid.level, grid,
                               request.steps, request.guidance, seeds, callback,
                               request.window_batch)

    def write(path: Path, image: np.ndarray, file_tags: dict[str, str]) -> Path:
        return write_geotiff(path, image, grid.crs, grid.transform, file_tags,
                             request.overwrite, software=software,
                             allowed_dirs=request.allowed_dirs)

    return rank_images(images, seeds, request.ranker, text, request.out, keep, tags, write)


def retag(source: Path, target: Path, tags: dict[str, str], software: str,
          allowed_dirs=None) -> Path:
    """Copy a written RGB output to ``target`` (replacing it, possibly itself) with ``tags``:
    a COG's tags cannot grow in place without breaking its layout."""
    with rasterio.open(source) as src:
        width, height = src.width, src.height
        crs, transform = CRS.from_wkt(src.crs.to_wkt()), src.transform

        def fill(dst) -> None:
            for r in range(0, height, COPY_ROWS):
                window = Window(0, r, width, min(COPY_ROWS, height - r))
                dst.write(src.read([1, 2, 3], window=window), window=window)

        return write_geotiff_blocks(target, width, height, fill, crs, transform, tags, True,
                                    software, allowed_dirs)


def read_tags(path: Path) -> dict[str, str]:
    with rasterio.open(path) as src:
        return {k: v for k, v in src.tags().items() if k.startswith(TAG_PREFIX)}


def scenes(run_one: Callable[[int, Path], Path], request, seed: int, text: str,
           software: str) -> Ranked:
    """N whole scenes (``run_one(seed, out) -> path`` makes one), ranked whole."""
    n, ranker = request.candidates, request.ranker
    out = Path(request.out).expanduser()
    seeds = candidate_seeds(seed, n)
    keep = request.keep_candidates or (ranker is None and n > 1)
    check_candidate_paths(out, n, True, request.overwrite)
    candidates = [Candidate(k + 1, s) for k, s in enumerate(seeds)]
    made: list[Path] = []
    try:
        for c in candidates:
            c.path = run_one(c.seed, out if n == 1 else candidate_path(out, c.index))
            made.append(c.path)
            if ranker is not None:
                c.score = score_raster(ranker, c.path, text).score
        ranked = order(candidates)
        if ranker is None and n == 1:
            return Ranked(ranked[0].path, None, ranked, read_tags(ranked[0].path))
        final: dict[int, Path] = dict((c.index, p) for c, p in _placed(ranked, out, keep))
        for c in reversed(ranked):  # the best last, as for single images
            target = final.get(c.index)
            if target is None:
                continue
            tags = candidate_tags(read_tags(c.path), ranked, c, _model_id(ranker))
            retag(c.path, target, tags, software, request.allowed_dirs)
            if c.path != target:
                c.path.unlink(missing_ok=True)
                made.append(target)
            c.path = target
    except BaseException:
        for path in made:
            path.unlink(missing_ok=True)
        raise
    for c in ranked:
        if c.index not in final and c.path is not None:
            c.path.unlink(missing_ok=True)
            c.path = None
    best = ranked[0]
    return Ranked(best.path, best.score, ranked, read_tags(best.path))


def numbered_steps(callback: Callable | None, k: int, n: int) -> Callable | None:
    """The step callback of candidate ``k`` (from 0) of ``n`` whole scenes, counting all of
    them as one run: its windows are numbered after the earlier candidates' ("tile 10 of
    18"), so progress never starts over and the time left covers every candidate."""
    if callback is None or n <= 1:
        return callback

    def on_step(pipe, step, timestep, tensors):
        tiles = tensors.get("tiles", 1)
        return callback(pipe, step, timestep, {**tensors, "tiles": n * tiles,
                                               "tile": k * tiles + tensors.get("tile", 1)})

    return on_step
