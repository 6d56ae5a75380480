"""The one job set-up (engine.jobs.prepared): every way a job starts (the CLI's commands, the
service's submit and run, a batch task) plans it exactly once, builds its request through one
mapping, and counts the steps its run really makes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import rasterio

from engine.cli import build_parser, main
from engine.jobs import generate as generate_module
from engine.jobs import prepared
from engine.jobs import restyle as restyle_module

RASTERS = Path(__file__).resolve().parents[2] / "shared" / "data" / "rasters"
FAST = ["--steps", "2", "--seed", "5", "--device", "cpu", "--precision", "fp32", "--quiet"]
SCENE = ["--bbox", "500000,5000000,500150,5000120", "--crs", "EPSG:32633", "--level", "17",
         "--prompt", "farmland", "--tile", "64", "--overlap", "16"]


@pytest.fixture
def plans(monkeypatch) -> list[str]:
    """Every plan made, by any path: generate's plan() and the raster planners."""
    made: list[str] = []

    def counted(name, function):
        def wrapper(*args, **kwargs):
            made.append(name)
            return function(*args, **kwargs)
        return wrapper

    plan = counted("generate", generate_module.plan)
    monkeypatch.setattr(generate_module, "plan", plan)
    monkeypatch.setattr(prepared, "plan", plan)
    for kind, planner in list(prepared.RASTER_PLANNERS.items()):
        monkeypatch.setitem(prepared.RASTER_PLANNERS, kind, counted(kind, planner))
    monkeypatch.setattr(restyle_module, "plan_restyle",
                        counted("restyle", restyle_module.plan_restyle))
    return made


def edit_mask(folder: Path) -> Path:
    with rasterio.open(RASTERS / "RGB.byte.tif") as ds:
        x0, y0 = ds.transform * (400, 300)
        x1, y1 = ds.transform * (430, 330)
    mask = folder / "mask.geojson"
    mask.write_text(json.dumps({"type": "Polygon", "coordinates": [
        [[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]]]}))
    return mask


def test_every_cli_job_is_planned_once(plans, tmp_path, tiny_t2i, tiny_inpaint, monkeypatch,
                                       capsys):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    mask = ["--mask", str(edit_mask(tmp_path)), "--mask-crs", "EPSG:32618"]
    source = ["--raster", str(RASTERS / "RGB.byte.tif"), "--prompt", "a lake"]
    jobs = {
        "one image": ["generate", *SCENE[:8], "--bbox", "500000,5000000,500060,5000060",
                      "--model", str(tiny_t2i)],
        "joint scene": ["generate", *SCENE, "--model", str(tiny_t2i), "--scene-method", "joint"],
        # The demo weights rename the output: the new name is checked, the job not re-planned.
        "demo scene": ["generate", *SCENE, "--model", "someone/not-here", "--offline",
                       "--demo-fallback", "--scene-method", "joint"],
        "edit": ["edit", *source, *mask, "--model", str(tiny_inpaint)],
        "demo edit": ["edit", *source, *mask, "--model", "someone/not-here", "--offline",
                      "--demo-fallback"],
        "restyle": ["restyle", *source, *mask, "--model", str(tiny_t2i)],
        "extend": ["extend", "--raster", str(RASTERS / "shade.tif"), "--by", "20px", "--side",
                   "east", "--prompt", "a lake", "--model", str(tiny_inpaint), "--tile", "64",
                   "--overlap", "16"],
    }
    for number, (name, args) in enumerate(jobs.items()):
        plans.clear()
        code = main([*args, *FAST, "--out", str(tmp_path / f"{number}.tif")])
        assert code == 0, (name, capsys.readouterr().err)
        assert len(plans) == 1, (name, plans)


def test_a_service_job_is_planned_once_at_submit(plans, tmp_path, tiny_t2i, tiny_inpaint):
    from engine.service.job_bodies import generate_job, queued_progress, raster_job
    from engine.service.job_queue import Job
    from engine.service.runner import ModelManager, ServiceConfig, run_job
    from engine.service.schemas import EditJob, GenerateJob

    config = ServiceConfig(str(tiny_t2i), "cpu", [tmp_path], 10**8, precision="fp32")
    models = ModelManager(config)
    body = GenerateJob(bbox=[500000, 5000000, 500150, 5000120], crs="EPSG:32633", level=17,
                       prompt="farmland", steps=2, seed=5, tile=64, overlap=16,
                       scene_method="joint")
    setup = generate_job(body, tmp_path / "scene.tif", config)
    steps = queued_progress(setup, None)
    job = Job("generate", setup, steps=steps.steps)
    job.tiles = steps.runs
    result = run_job(job, models)
    assert Path(result["path"]).exists() and plans == ["generate"]

    plans.clear()
    mask = json.loads(edit_mask(tmp_path).read_text())
    body = EditJob(type="edit", raster=str(RASTERS / "RGB.byte.tif"), prompt="a lake",
                   mask=mask, mask_crs="EPSG:32618", steps=2, seed=5, model=str(tiny_inpaint))
    setup = raster_job(body, tmp_path / "edit.tif", config)
    assert plans == ["edit"] and setup.source is None and setup.raster_plan.windows >= 1
    result = run_job(Job("edit", setup, steps=2, model=str(tiny_inpaint)), models)
    # Planned again on the worker's thread: a raster plan reads its source window by window,
    # and GDAL's handles (and the block-cache setting it is read under) belong to one thread.
    assert Path(result["path"]).exists() and plans == ["edit", "edit"]


def test_the_cli_and_the_service_map_to_the_same_request(tmp_path):
    from engine.service.schemas import GenerateJob

    args = build_parser().parse_args([
        "generate", "--bbox", "1,2,3,4", "--crs", "EPSG:3857", "--prompt", "fields",
        "--scale", "1:5000", "--dpi", "120", "--seed", "9", "--steps", "7", "--guidance", "2.5",
        "--tile", "128", "--overlap", "32", "--scene-method", "cascade",
        "--cascade-strengths", "0.5,0.4", "--cascade-coarse-level", "14", "--candidates", "3",
        "--keep-candidates", "--init-raster", "/x.tif", "--strength", "0.3", "--out", "o.tif"])
    body = GenerateJob(bbox=[1, 2, 3, 4], crs="EPSG:3857", prompt="fields", scale="1:5000",
                       dpi=120, seed=9, steps=7, guidance=2.5, tile=128, overlap=32,
                       scene_method="cascade", cascade_strengths=[0.5, 0.4],
                       cascade_coarse_level=14, candidates=3, keep_candidates=True,
                       init_raster="/x.tif", strength=0.3)
    from_cli = prepared.generate_request(args, out="o.tif")
    from_service = prepared.generate_request(body, out="o.tif")
    assert from_cli.scale_denominator == 5000 and from_cli.bbox == (1, 2, 3, 4)
    from_service.cascade_strengths = tuple(from_service.cascade_strengths)  # JSON: a list
    assert from_cli == from_service


def test_the_step_count_is_the_steps_the_run_makes(tmp_path, t2i_model):
    """progress() against the step callbacks a run really makes: 178 x 143 px in 64 px
    windows 48 px apart are 4 x 3 windows; outpainted, 12 runs of 2 steps; by joint
    denoising, 2 steps once."""
    request = prepared.generate_request(
        build_parser().parse_args(["generate", *SCENE, "--steps", "2", "--seed", "5",
                                   "--scene-method", "joint", "--out", "x.tif"]),
        out=tmp_path / "joint.tif")
    job = prepared.prepare(request)
    assert (job.grid.width, job.grid.height) == (178, 143)
    assert (job.windows.nx, job.windows.ny) == (4, 3)
    assert prepared.progress(job, inpainting=True).total == 24
    steps = prepared.progress(job, inpainting=False, model=t2i_model)
    assert (steps.steps, steps.runs, steps.total, steps.label) == (2, 1, 2, "12 windows")
    made = []
    prepared.run(job, t2i_model, lambda pipe, step, t, tensors: made.append(step) or tensors)
    assert len(made) == steps.total


def test_a_batch_task_is_planned_once_where_it_runs(plans, tmp_path, tiny_t2i, t2i_model):
    from engine.batch.items import BatchItem
    from engine.batch.tasks import DONE, Settings, run_task, tasks_for

    item = BatchItem("a", (500000, 5000000, 500060, 5000060), "EPSG:32633", "a lake", level=17)
    [task] = tasks_for([item], tmp_path, Settings(str(tiny_t2i), steps=2))
    assert run_task(task, t2i_model).status == DONE and plans == ["generate"]
