"""Memory bounded by windows, not by the raster: planning and running a restyle of a large
raster, scoring its regenerated area, and the service's worker after a job.

Peak resident memory is sampled from /proc (engine.bench.memory.peak_growth), so these run
on Linux only, each from a heap trimmed first (so freed memory of earlier tests cannot hide
growth). The rasters are 5000 px squares, tiled and deflated (a few MB on disk): a
whole-raster plan over them has 676 windows of 256 px, whose masks and weights held
together are some 500 MB; each bound below is a few windows' worth plus GDAL's bounded
block cache (engine.geo.raster_source.open_source bounds it).
"""

from __future__ import annotations

import ctypes
import gc
import sys
import time

import numpy as np
import pytest
import rasterio

from engine.bench.memory import huge_raster, resident_bytes, small_mask
from engine.bench.memory import peak_growth as _peak_growth

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                reason="resident memory is read from /proc")

SIDE = 5000
MB = 1 << 20
GDAL_CACHE = 64 * MB  # GDAL's block cache while a source is open (1.2 GB unbounded here)
WINDOWS_WORTH = 100 * MB  # some windows' arrays, rows being copied, allocator slack


def _trim() -> None:
    """Earlier tests' freed memory returned to the system: work measured after this cannot
    hide its growth by reusing it."""
    gc.collect()
    ctypes.CDLL(None).malloc_trim(0)


def peak_growth(work) -> tuple[int, int]:
    _trim()
    return _peak_growth(work)


@pytest.fixture(scope="module")
def filled(tmp_path_factory) -> str:
    """Every pixel valid (a constant, a random patch in the middle): a whole-raster restyle
    has work in every window."""
    return huge_raster(tmp_path_factory.mktemp("big") / "filled.tif", SIDE, 120)


@pytest.fixture(scope="module")
def inpaint_model(tiny_inpaint):
    from engine.model.checkpoint import load_model

    return load_model(str(tiny_inpaint), "cpu", precision="fp32")


def test_whole_raster_plan_holds_one_window_at_a_time(filled):
    from engine.geo.raster_source import open_source
    from engine.jobs.restyle import RestyleRequest, plan_restyle

    request = RestyleRequest(raster=filled, prompt="a park", out=f"{filled}.out.tif")
    plans = []

    def plan() -> None:
        with open_source(filled) as src:
            plans.append(plan_restyle(request, src))

    _, growth = peak_growth(plan)
    windows = plans[0].windows
    assert windows == 26 * 26  # 256 px windows, 64 px overlap, over 5000 px
    assert growth < GDAL_CACHE + WINDOWS_WORTH, (
        f"planning {windows} windows took {growth / MB:.0f} MB")


def test_restyle_run_of_a_large_raster_is_bounded(filled, inpaint_model, tmp_path):
    """A real run (plan, scratch, output written row by row) of a whole-raster restyle at a
    strength that keeps no step: the output is the source, in bounded memory."""
    from engine.jobs.restyle import RestyleRequest, restyle_raster

    out = tmp_path / "restyled.tif"
    request = RestyleRequest(raster=filled, prompt="a park", out=out, strength=0.1, steps=2,
                             seed=1)
    _, growth = peak_growth(lambda: restyle_raster(request, inpaint_model))
    assert growth < GDAL_CACHE + WINDOWS_WORTH, f"the run took {growth / MB:.0f} MB"
    with rasterio.open(filled) as src, rasterio.open(out) as dst:
        window = rasterio.windows.Window(SIDE // 2 - 300, SIDE // 2 - 300, 600, 600)
        assert (dst.width, dst.height) == (SIDE, SIDE)
        assert np.array_equal(dst.read(window=window), src.read(window=window))


def test_edit_plan_reads_only_around_the_mask(filled):
    """An edit with a small mask: memory of the mask's area, whatever the raster's size."""
    from engine.geo.raster_source import open_source
    from engine.jobs.edit import EditRequest, plan_edit

    request = EditRequest(raster=filled, prompt="a park", out=f"{filled}.edit.tif",
                          mask=small_mask(SIDE))
    plans = []

    def plan() -> None:
        with open_source(filled) as src:
            plans.append(plan_edit(request, src))

    _, growth = peak_growth(plan)
    (area, _), = plans[0].groups
    assert area.width < 1000 and area.height < 1000
    assert growth < WINDOWS_WORTH, f"planning took {growth / MB:.0f} MB"


class _Ranker:
    image_size = 256

    class checkpoint:  # noqa: N801 - stands for a RankModel's checkpoint attribute
        model_id = "test/ranker"

    def probabilities(self, images, texts):
        assert len(images) <= 16  # scored in groups, not all at once
        return np.full((len(images), len(texts)), 0.5)


class _Store:
    """A scratch store's read over an area of 12000 px: fresh pixels for each read."""

    def read(self, band: int, window) -> np.ndarray:
        return np.full((window.height, window.width), band, np.uint8)


def test_score_reads_its_windows_in_groups():
    from engine.geo.raster_source import BandMapping
    from engine.jobs.output_score import areas_score_tags

    class Plan:
        class info:  # noqa: N801
            rgb_bands = (1, 2, 3)

        mapping = BandMapping((1, 2, 3), (0.0,) * 3, (255.0,) * 3, "uint8")

    area = rasterio.windows.Window(0, 0, 12000, 12000)  # 2209 windows of 256 px: 430 MB
    tags = {}
    _, growth = peak_growth(lambda: tags.update(
        areas_score_tags(_Ranker(), Plan, [(area, _Store(), None)], "a park")))
    assert tags["TEXT2EARTH_RSCLIP_SCORE"] == "0.500000"
    assert growth < 50 * MB, f"scoring took {growth / MB:.0f} MB"


KEPT = []


def test_service_worker_gives_a_jobs_memory_back():
    """What a job freed goes back to the system when it ends: glibc otherwise keeps it in
    the worker thread's heap for as long as anything made later sits above it."""
    from engine.service.job_queue import FINAL, Job, JobCancelledError, JobQueue

    def runner(job):
        warm = np.ones(512 * 1024 // 8)
        del warm  # freed once: glibc now serves window-sized arrays from its heap
        arrays = [np.ones(256 * 1024 // 8) for _ in range(1000)]  # 256 MB, window-sized
        KEPT.append(np.ones(2000))  # something long-lived made late, above them
        del arrays
        raise JobCancelledError()

    _trim()
    before = resident_bytes()
    queue = JobQueue(runner)
    job = queue.submit(Job(type="restyle", request=None, steps=1))
    deadline = time.monotonic() + 30
    while job.state not in FINAL and time.monotonic() < deadline:
        time.sleep(0.02)
    queue.stop()  # the worker has done its clean-up when it ends
    assert job.state == "cancelled"
    assert resident_bytes() - before < 40 * MB
