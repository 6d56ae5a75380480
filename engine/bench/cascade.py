"""Scene methods side by side on the same extent: cascade vs outpaint vs joint (`make bench`,
or ``python -m engine.bench.cascade``).

For each method: seconds per output megapixel, the seam metric (engine.bench.seam_metric:
gradients across window borders over gradients elsewhere, 1.0 = invisible), and a
low-frequency coherence figure defined here: the same ratio on the scene block-averaged by 8
(the cascade's default depth, level - 3), with the window borders mapped onto the blocks. It
asks whether districts, not pixels, continue across window borders: a window that invents its
own layout shows up as a step between block means at its border (1.0 = no step). For the
cascade also: the share of the time its coarse pass takes (goal <= 25 %), and how much of the
coarse layout survives refinement (correlation of the scene block-averaged onto the coarse
grid with the coarse pass alone, i.e. the same cascade with strength 0 at every step).

Random weights (the tiny or the full-size architecture) make textures, not imagery: the
timings and the coarse share are real, the seam and coherence figures only show that the
arithmetic of each method leaves no border artefact of its own. Whether cascade should become
the default for large extents needs these figures on the real weights.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import rasterio

from engine.bench.seam_metric import border_lines, seam_ratio
from text2earth_qgis.core.contract.scale import mercator_resolution
from text2earth_qgis.core.contract.tiles import plan_scene

BLOCK = 8  # 2 ** CASCADE_DEPTH: one block is one pixel of the coarse level
METHODS = ("cascade", "outpaint", "joint")


def block_mean(gray: np.ndarray, block: int = BLOCK) -> np.ndarray:
    h, w = gray.shape[0] // block * block, gray.shape[1] // block * block
    return gray[:h, :w].reshape(h // block, block, w // block, block).mean(axis=(1, 3))


def low_frequency_seams(image: np.ndarray, tile: int, overlap: int, block: int = BLOCK) -> float:
    """The seam ratio of ``image`` (h, w, bands) block-averaged by ``block``: mean step
    between neighbouring blocks where a window border (start or end of an overlap) falls
    between them, over the mean step everywhere else."""
    height, width = image.shape[:2]
    plan = plan_scene(width, height, tile, overlap)
    col_off, row_off = plan.offset
    small = block_mean(image.astype(np.float64).mean(axis=2), block)
    dx, dy = np.abs(np.diff(small, axis=1)), np.abs(np.diff(small, axis=0))

    def steps(starts: list[int], size: int, n: int) -> np.ndarray:
        mask = np.zeros(n, bool)  # mask[c - 1]: the step from block c-1 to block c
        for line in border_lines(starts, overlap, size):
            c = round(line / block)  # the block boundary nearest the pixel border
            if 1 <= c <= n:
                mask[c - 1] = True
        return mask

    cols = steps([ix * plan.stride - col_off for ix in range(1, plan.nx)], width, dx.shape[1])
    rows = steps([iy * plan.stride - row_off for iy in range(1, plan.ny)], height, dy.shape[0])
    across = np.concatenate([dx[:, cols].ravel(), dy[rows, :].ravel()])
    inside = np.concatenate([dx[:, ~cols].ravel(), dy[~rows, :].ravel()])
    if not across.size:
        return float("nan")
    return float(across.mean() / max(inside.mean(), 1e-12))


def layout_kept(scene: Path, coarse: Path, block: int = BLOCK) -> float:
    """Correlation of two scenes of one grid block-averaged by ``block`` (grey levels)."""
    a, b = (block_mean(_read(p).astype(np.float64).mean(axis=2), block) for p in (scene, coarse))
    return float(np.corrcoef(a.ravel(), b.ravel())[0, 1])


def _read(path: Path) -> np.ndarray:
    with rasterio.open(path) as ds:
        return np.moveaxis(ds.read(), 0, 2)


def _models(full_size: bool, device: str | None, tmp: Path):
    """(text-to-image, inpainting) random models of one architecture, fp32."""
    from engine.model.checkpoint import load_model
    from engine.model.tiny_checkpoint import write_checkpoint

    if not full_size:
        t2i = load_model(str(write_checkpoint(tmp / "t2i", seed=0)), device, precision="fp32")
        inpaint = load_model(str(write_checkpoint(tmp / "inpaint", inpainting=True, seed=1)),
                             device, precision="fp32")
        return t2i, inpaint
    from dataclasses import replace

    from diffusers import UNet2DConditionModel

    from engine.bench.baseline import build_model
    from engine.model.inpaint import Text2EarthInpaintPipeline
    from engine.model.tiny_checkpoint import unet_config

    t2i = build_model(True, device)
    pipe = t2i.pipeline
    unet = UNet2DConditionModel(**unet_config(9, full_size=True)).to(t2i.device)
    inpaint = replace(t2i, pipeline=Text2EarthInpaintPipeline(
        pipe.vae, pipe.text_encoder, pipe.tokenizer, unet, pipe.scheduler))
    return t2i, inpaint


def compare(steps: int, windows: int, device: str | None, tmp: Path, full_size: bool = False,
            tile: int = 256, overlap: int = 64, seed: int = 1) -> dict:
    """The three methods on one square extent of ``windows`` x ``windows`` target windows."""
    from engine.bench.baseline import sync
    from engine.jobs.generate import GenerateRequest, generate, plan
    from engine.scenes.cascade import progress_steps
    from engine.scenes.ladder import plan_ladder

    t2i, inpaint = _models(full_size, device, tmp)
    side_px = windows * (tile - overlap) + overlap
    side = side_px * mercator_resolution(17)
    x0, y0 = 920000.0, 6250000.0

    def request(method: str, name: str, **kw) -> GenerateRequest:
        return GenerateRequest(bbox=(x0, y0, x0 + side, y0 + side), crs="EPSG:3857",
                               prompt="a river through farmland and a town", level=17,
                               seed=seed, steps=steps, tile=tile, overlap=overlap,
                               scene_method=method, out=tmp / name, overwrite=True,
                               resume=False, **kw)

    def timed(method: str, model, name: str, **kw) -> tuple[float, list, Path]:
        stamps: list[tuple[int, float]] = []

        def on_step(pipe, i, t, tensors):
            sync(t2i.device)
            stamps.append((tensors.get("tile", 1), time.perf_counter()))
            return tensors

        sync(t2i.device)
        start = time.perf_counter()
        path = generate(request(method, name, **kw), model, on_step).path
        sync(t2i.device)
        return start, [(tile_, s - start) for tile_, s in stamps] + [
            (None, time.perf_counter() - start)], path

    models = {"cascade": t2i, "outpaint": inpaint, "joint": t2i}
    generate(request("joint", "warm.tif"), t2i)  # first-call allocations, lazy imports
    rows: dict[str, dict] = {}
    megapixels = side_px * side_px / 1e6
    for method in METHODS:
        _, stamps, path = timed(method, models[method], f"{method}.tif")
        image = _read(path)
        seconds = stamps[-1][1]
        rows[method] = {"seconds": round(seconds, 2),
                        "s_per_mp": round(seconds / megapixels, 2),
                        "seam_ratio": round(seam_ratio(image, tile, overlap)["ratio"], 4),
                        "low_frequency_seams": round(low_frequency_seams(image, tile,
                                                                         overlap), 4)}
        if method == "cascade":
            req = request("cascade", "x.tif")
            ladder = plan_ladder(req, plan(req))
            coarse = ladder.rungs[0].plan.nx * ladder.rungs[0].plan.ny
            coarse_end = max(s for tile_, s in stamps if tile_ is not None and tile_ <= coarse)
            window_steps = progress_steps(ladder, steps)
            _, _, flat = timed("cascade", t2i, "coarse-only.tif",
                               cascade_strengths=(0.0,) * (len(ladder.rungs) - 1))
            rows[method].update(
                levels=list(ladder.levels), strengths=list(ladder.strengths),
                windows_per_level=[r.plan.nx * r.plan.ny for r in ladder.rungs],
                coarse_share_time=round(coarse_end / seconds, 4),
                coarse_share_steps=round(coarse * steps / window_steps, 4),
                layout_kept=round(layout_kept(path, flat), 4))
    return {"model": "full-size" if full_size else "tiny", "device": str(t2i.device),
            "steps": steps, "side_px": side_px, "tile": tile, "overlap": overlap,
            "target_windows": windows * windows, "methods": rows}


def coarse_shares(steps: int = 50, sides=(2, 3, 4, 8, 16, 32), tile: int = 256,
                  overlap: int = 64) -> list[dict]:
    """The ladder's planned work for square extents of n x n target windows (no model run):
    the coarse pass's share of the window-steps, and all the cascade's window-steps over a
    single-level scene's (outpaint or joint: every target window, every step)."""
    from engine.jobs.generate import GenerateRequest, plan
    from engine.scenes.cascade import progress_steps
    from engine.scenes.ladder import plan_ladder

    rows = []
    for n in sides:
        side = (n * (tile - overlap) + overlap) * mercator_resolution(17)
        request = GenerateRequest(bbox=(920000.0, 6250000.0, 920000.0 + side, 6250000.0 + side),
                                  crs="EPSG:3857", prompt="x", level=17, steps=steps, tile=tile,
                                  overlap=overlap, scene_method="cascade", out="unused.tif")
        ladder = plan_ladder(request, plan(request))
        first = ladder.rungs[0].plan
        total = progress_steps(ladder, steps)
        rows.append({"target_windows": n * n, "levels": list(ladder.levels),
                     "windows_per_level": [r.plan.nx * r.plan.ny for r in ladder.rungs],
                     "coarse_share": round(first.nx * first.ny * steps / total, 4),
                     "vs_single_level": round(total / (n * n * steps), 3)})
    return rows


def print_shares(rows: list[dict]) -> None:
    for r in rows:
        print(f"    planned, {r['target_windows']:>4} target windows: ladder {r['levels']} windows "
              f"{r['windows_per_level']}: coarse pass {100 * r['coarse_share']:.1f} % of the "
              f"window-steps, cascade / single-level scene {r['vs_single_level']:.2f}", flush=True)


def print_compare(result: dict) -> None:
    print(f"  scene methods, {result['model']} random weights on {result['device']}: "
          f"{result['side_px']} px square at level 17 ({result['target_windows']} windows of "
          f"{result['tile']} px, overlap {result['overlap']}), {result['steps']} steps",
          flush=True)
    for method, row in result["methods"].items():
        print(f"    {method:<9} {row['s_per_mp']:8.2f} s/MP ({row['seconds']:.1f} s), seam ratio "
              f"{row['seam_ratio']:.3f}, low-frequency seams {row['low_frequency_seams']:.3f}",
              flush=True)
    row = result["methods"]["cascade"]
    print(f"    cascade ladder {row['levels']} strengths {row['strengths']} windows "
          f"{row['windows_per_level']}: coarse pass {100 * row['coarse_share_time']:.1f} % of "
          f"the time ({100 * row['coarse_share_steps']:.1f} % of the window steps; goal <= 25 %),"
          f" layout kept from the coarse pass r = {row['layout_kept']:.3f}", flush=True)
    print("    (random weights: seam and coherence figures show no artefact of the methods' "
          "own; the default scene method stays as it is until they are measured on the real "
          "weights)", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m engine.bench.cascade", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--windows", type=int, default=3, help="target windows per side")
    parser.add_argument("--full-size", action="store_true",
                        help="the full-size architecture (random weights; for a GPU)")
    parser.add_argument("--json", default="output/bench-cascade.json")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="t2e-bench-cascade-") as tmp:
        result = compare(args.steps, args.windows, args.device, Path(tmp), args.full_size)
    result["planned"] = coarse_shares()
    print_compare(result)
    print_shares(result["planned"])
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
