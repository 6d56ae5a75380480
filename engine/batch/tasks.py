"""One batch task = one output file (an item, or one variation of it), its fingerprint, and
running it through the ordinary generate path (checked writes: temp -> verify -> rename).

The fingerprint is a hash of everything that shapes the output's pixels; it is written into
the file's tags, so a rerun skips a file that exists and carries the same fingerprint and
redoes one whose inputs changed. Run anywhere (in-process or a Ray worker), a task gives the
same file: its seed comes from the item, never from the worker.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from engine.batch.items import BatchItem, item_seed, output_stems
from engine.errors import Text2EarthError
from engine.model.schedulers import DEFAULT_SCHEDULER

FINGERPRINT_TAG = "TEXT2EARTH_BATCH_FINGERPRINT"
ITEM_TAG = "TEXT2EARTH_BATCH_ITEM"
DONE, SKIPPED, FAILED = "done", "skipped", "failed"


@dataclass(frozen=True)
class Settings:
    """The batch-wide options that shape pixels (the same for every task)."""

    model: str
    precision: str = "fp32"
    steps: int = 50
    guidance: float = 4.0
    scheduler: str = DEFAULT_SCHEDULER
    tile: int = 256
    overlap: int = 64
    max_pixels: int | None = None
    pipeline_check: bool = False  # the demo weights: outputs say so in their names and tags


@dataclass(frozen=True)
class BatchTask:
    item: BatchItem
    variation: int  # 1-based
    out: str  # the output path (a string: tasks cross process boundaries)
    settings: Settings

    @property
    def key(self) -> str:
        return Path(self.out).stem

    @property
    def seed(self) -> int:
        return (item_seed(self.item) + self.variation - 1) % 2**32

    def fingerprint(self) -> str:
        settings = asdict(self.settings)
        settings.pop("pipeline_check")  # follows from the model; earlier fingerprints hold
        fields = {"item": asdict(self.item), "seed": self.seed, "settings": settings}
        return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()


@dataclass
class TaskResult:
    key: str
    item_id: str
    out: str
    status: str  # done | skipped | failed
    seconds: float = 0.0
    error: str | None = None
    kind: str | None = None
    extra: dict = field(default_factory=dict)


def tasks_for(items: list[BatchItem], out_dir: Path, settings: Settings) -> list[BatchTask]:
    """``<id>.tif``, or ``<id>_v<K>.tif`` for each of an item's variations (``.pipeline-check``
    before ``.tif`` on the demo weights)."""
    suffix = ".pipeline-check.tif" if settings.pipeline_check else ".tif"
    return [BatchTask(item, k, str(out_dir / f"{stem}{suffix}"), settings)
            for item in items for k, stem in enumerate(output_stems(item), start=1)]


def written_fingerprint(path: Path) -> str | None:
    """The fingerprint in an existing output's tags (None: no file, or not one of ours)."""
    import rasterio
    from rasterio.errors import RasterioError

    if not path.is_file():
        return None
    try:
        with rasterio.open(path) as src:
            return src.tags().get(FINGERPRINT_TAG)
    except RasterioError:
        return None


def reads_back_whole(path: Path) -> bool:
    """Whether every block of the file (bands, mask, overviews) reads back: a truncated file
    keeps its header, and so its fingerprint, but not its pixels."""
    from rasterio._err import CPLE_BaseError
    from rasterio.errors import RasterioError

    from engine.geo.geotiff import verify_raster

    try:
        verify_raster(path)
    except (RasterioError, CPLE_BaseError, OSError):
        return False
    return True


def is_done(task: BatchTask) -> bool:
    """Made by an earlier run with the same inputs, and whole: anything else is redone."""
    path = Path(task.out)
    return written_fingerprint(path) == task.fingerprint() and reads_back_whole(path)


def generate_request(task: BatchTask):
    from engine.geo.grid import DEFAULT_MAX_PIXELS
    from engine.jobs.generate import GenerateRequest

    s = task.settings
    return GenerateRequest(
        bbox=task.item.bbox, crs=task.item.crs, prompt=task.item.prompt, out=task.out,
        negative_prompt=task.item.negative, level=task.item.level,
        resolution=task.item.resolution, seed=task.seed, steps=s.steps, guidance=s.guidance,
        scheduler=s.scheduler, overwrite=True, max_pixels=s.max_pixels or DEFAULT_MAX_PIXELS,
        tile=s.tile, overlap=s.overlap, window_batch=1, resume=False,
        pipeline_check=s.pipeline_check,
        extra_tags={FINGERPRINT_TAG: task.fingerprint(), ITEM_TAG: task.item.id,
                    "TEXT2EARTH_VARIATION": str(task.variation)},
    )


def run_task(task: BatchTask, model, callback=None) -> TaskResult:
    """Generate one output; a Text2EarthError is this task's failure (one line), not the
    batch's. ``overwrite`` is on: an existing file reached here has another fingerprint.
    One window per UNet call, so the pixels do not depend on the worker's free memory."""
    from engine.jobs.prepared import prepare, run

    start = time.perf_counter()
    try:
        run(prepare(generate_request(task)), model, callback)
    except Text2EarthError as exc:
        return TaskResult(task.key, task.item.id, task.out, FAILED,
                          time.perf_counter() - start, str(exc), exc.kind)
    return TaskResult(task.key, task.item.id, task.out, DONE, time.perf_counter() - start)
