"""Edits and restyles run through the scenes' window loop and journaled store: a kill at
any durability point of the run (engine.scenes.folder.hook), then the same request again,
gives the pixels (and mask) of an uninterrupted run, and the rerun does not make again the
windows the store recorded."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine

from engine.jobs.edit.request import EditRequest
from engine.jobs.edit.run import edit_raster
from engine.jobs.restyle import RestyleRequest, restyle_raster
from engine.scenes import folder as folder_module
from engine.scenes.state import scene_files
from engine.scenes.store import decode_redo

UTM = "EPSG:32632"
ORIGIN = (447000.0, 5411100.0)
PX = 0.8  # m: about the model's level-17 pixel, so windows are the grid's own pixels
FAST = dict(prompt="a lake", steps=1, tile=64, overlap=16, seed=5)


class Killed(BaseException):
    """Stands for a kill: no `except Exception` of the job catches it."""


@pytest.fixture(scope="module")
def inpaint_model(tiny_inpaint):
    from engine.model.checkpoint import load_model

    return load_model(str(tiny_inpaint), "cpu", precision="fp32")


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    """200 x 96 px of smooth colours with an internal mask band with a hole: an edit also
    records which pixels it made (in the same store), so the output's mask opens there."""
    path = tmp_path_factory.mktemp("src") / "src.tif"
    rows, cols = np.mgrid[0:96, 0:200]
    data = np.stack([(cols * 1.2) % 256, (rows * 2.5) % 256, ((cols + rows) * 0.7) % 256])
    with rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True):
        with rasterio.open(path, "w", driver="GTiff", width=200, height=96, count=3,
                           dtype="uint8", crs=UTM,
                           transform=Affine(PX, 0, ORIGIN[0], 0, -PX, ORIGIN[1])) as ds:
            ds.write(data.astype(np.uint8))
            mask = np.full((96, 200), 255, np.uint8)
            mask[35:55, 40:70] = 0  # a hole the edit fills: the output's mask opens there
            ds.write_mask(mask)
    return path


def polygon(c0: int, r0: int, c1: int, r1: int) -> str:
    """A rectangle of grid px as WKT in the source's CRS."""
    x0, y0 = ORIGIN[0] + c0 * PX, ORIGIN[1] - r0 * PX
    x1, y1 = ORIGIN[0] + c1 * PX, ORIGIN[1] - r1 * PX
    return f"POLYGON(({x0} {y0},{x1} {y0},{x1} {y1},{x0} {y1},{x0} {y0}))"


def pixels(path: Path) -> np.ndarray:
    with rasterio.open(path) as ds:
        return np.concatenate([ds.read(), ds.read_masks(1)[None]])


class Run:
    """Runs a job, counting its windows (one step each: one callback per window) and its
    durability points; ``stop_at``: the point where it is killed."""

    def __init__(self, job, model) -> None:
        self.job, self.model = job, model
        self.points, self.windows, self.stop_at = 0, 0, None

    def hook(self, n: int, what: str) -> None:
        self.points += 1
        if self.points == self.stop_at:
            raise Killed(what)

    def step(self, pipe, i, t, tensors):
        self.windows += 1
        return tensors

    def __call__(self, request, stop_at: int | None = None):
        self.points, self.windows, self.stop_at = 0, 0, stop_at
        return self.job(request, self.model, self.step)


def recorded(out: Path) -> int:
    """Windows the stores of ``out`` hold: recorded, or in a whole redo file (re-applied on
    resume)."""
    count = 0
    for names in scene_files(out):
        done = set(json.loads(names.state.read_text())["done"])
        redo = decode_redo(names.redo.read_bytes()) if names.redo.exists() else None
        count += len(done | {key for key, _, _ in redo or []})
    return count


def kill_everywhere(tmp_path, monkeypatch, run: Run, make_request,
                    windows: int) -> np.ndarray:
    monkeypatch.setattr(folder_module, "hook", run.hook)
    whole = run(make_request(tmp_path / "whole.tif"))
    assert run.windows == windows
    expected, total = pixels(whole.path), run.points
    # Per window: redo (fsync, rename, folder), scratch, state (fsync, rename, folder).
    assert total >= 7 * windows, total
    resumed_some = False
    for n in range(1, total + 1):
        out = tmp_path / f"kill{n}" / "e.tif"
        out.parent.mkdir()
        with pytest.raises(Killed):
            run(make_request(out), stop_at=n)
        done = recorded(out)
        result = run(make_request(out))
        assert np.array_equal(pixels(result.path), expected), f"differs after point {n}"
        assert run.windows == windows - done, (n, done)  # recorded windows not made again
        resumed_some |= done > 0
        assert sorted(p.name for p in out.parent.iterdir()) == ["e.tif"], n
    assert resumed_some
    return expected


def test_an_edit_killed_at_every_durability_point_resumes_to_the_same_pixels(
        tmp_path, monkeypatch, inpaint_model, source):
    def request(out: Path) -> EditRequest:
        return EditRequest(raster=source, mask=polygon(20, 40, 120, 50), out=out,
                           fill_nodata=True, **FAST)

    expected = kill_everywhere(tmp_path, monkeypatch, Run(edit_raster, inpaint_model),
                               request, 3)
    assert (expected[3, 40:50, 45:65] == 255).all()  # made in the source's mask hole


def test_a_restyle_killed_at_every_durability_point_resumes_to_the_same_pixels(
        tmp_path, monkeypatch, inpaint_model, source):
    def request(out: Path) -> RestyleRequest:
        return RestyleRequest(raster=source, mask=polygon(20, 40, 80, 50), out=out,
                              strength=1.0, **FAST)

    kill_everywhere(tmp_path, monkeypatch, Run(restyle_raster, inpaint_model), request, 2)


def test_another_seed_or_prompt_does_not_resume_a_stopped_edit(tmp_path, monkeypatch,
                                                               inpaint_model, source):
    run = Run(edit_raster, inpaint_model)
    monkeypatch.setattr(folder_module, "hook", run.hook)
    mask = polygon(20, 40, 120, 50)
    out = tmp_path / "e.tif"
    for change in (dict(seed=6), dict(prompt="a forest")):
        alone = run(EditRequest(raster=source, mask=mask, out=tmp_path / "alone.tif",
                                **(FAST | change)))
        expected = pixels(alone.path)
        alone.path.unlink()
        with pytest.raises(Killed):  # the first window recorded, the second's redo written
            run(EditRequest(raster=source, mask=mask, out=out, **FAST), stop_at=12)
        assert recorded(out) == 1
        result = run(EditRequest(raster=source, mask=mask, out=out, **(FAST | change)))
        assert run.windows == 3  # all made anew: the stopped run was another job
        assert np.array_equal(pixels(result.path), expected)
        result.path.unlink()


def test_a_store_left_after_its_output_was_written_is_stale_not_resumable(tmp_path):
    """A kill after the output was placed, before its store was removed: nothing to resume."""
    import os
    import subprocess

    from engine.jobs.leftovers import resumable_scenes, stale_files

    dead = subprocess.Popen(["true"])
    dead.wait()
    state = {"fingerprint": "x", "seed": 1, "done": ["0/0_0"], "resumable": True,
             "pid": dead.pid}
    for name, tag, out_age in (("ended.tif", "a" * 12, 0), ("stopped.tif", "b" * 12, 600)):
        stem = tmp_path / f".t2e-scene-{tag}"
        stem.with_suffix(".json").write_text(json.dumps({**state, "out": name}))
        stem.with_suffix(".tif").write_bytes(b"x")
        (tmp_path / name).write_bytes(b"x")  # an older output (--overwrite) or the new one
        then = stem.with_suffix(".json").stat().st_mtime_ns - out_age * 10**9
        os.utime(tmp_path / name, ns=(then, then))
    stale = {p.name for p in stale_files(tmp_path)}
    assert stale == {f".t2e-scene-{'a' * 12}.json", f".t2e-scene-{'a' * 12}.tif"}
    assert [r.out.name for r in resumable_scenes(tmp_path)] == ["stopped.tif"]


@pytest.fixture(scope="module")
def t2i(tiny_t2i):
    from engine.model.checkpoint import load_model

    return load_model(str(tiny_t2i), "cpu", precision="fp32")


def test_an_init_raster_scene_killed_at_every_durability_point_resumes(tmp_path, monkeypatch,
                                                                      t2i, source):
    """85 x 45 m at level 17: 2 x 1 windows of img2img over the warped source."""
    from engine.jobs.generate import GenerateRequest, generate

    bbox = (ORIGIN[0] + 10, ORIGIN[1] - 60, ORIGIN[0] + 95, ORIGIN[1] - 15)

    def request(out: Path) -> GenerateRequest:
        return GenerateRequest(prompt="farmland", bbox=bbox, crs=UTM, level=17, tile=64,
                               overlap=16, steps=2, seed=5, init_raster=str(source),
                               strength=0.5, out=out)

    def job(req, model, callback):
        return generate(req, model, callback)

    expected = kill_everywhere(tmp_path, monkeypatch, Run(job, t2i), request, 2)
    assert expected.shape[1:] == (57, 108)
