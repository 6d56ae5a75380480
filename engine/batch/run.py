"""A batch from start to end: items -> tasks -> skip those already done -> run the rest on the
workers -> report and STAC collection. One item's failure is recorded and the batch goes on.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from engine.batch.items import ItemProblem, read_items
from engine.batch.json_out import write_json_text
from engine.batch.stac import write_collection
from engine.batch.tasks import (
    DONE,
    FAILED,
    SKIPPED,
    BatchTask,
    Settings,
    TaskResult,
    generate_request,
    is_done,
    tasks_for,
)
from engine.batch.workers import InProcess, ModelSpec, check_reachable, make_workers
from engine.errors import DiskFullError, InputError, Text2EarthError, WriteError

REPORT = "batch-report.json"


@dataclass
class BatchOptions:
    items: Path
    out_dir: Path
    settings: Settings
    spec: ModelSpec
    workers: int = 1
    address: str | None = None
    runtime_env: dict | None = None
    gpus_per_worker: float | None = None
    actor_env: dict | None = None  # environment variables of each Ray actor
    quiet: bool = False
    # Items one after the other on this process, each scene's wavefronts on the Ray
    # workers (engine.batch.scene_split): for a few huge outpainted extents.
    split_scenes: bool = False


@dataclass
class BatchReport:
    results: list[TaskResult] = field(default_factory=list)
    collection: Path | None = None
    report: Path | None = None
    seconds: float = 0.0

    def count(self, status: str) -> int:
        return sum(r.status == status for r in self.results)


def _problem_result(problem: ItemProblem) -> TaskResult:
    return TaskResult(problem.id, problem.id, "", FAILED, 0.0, problem.message, problem.kind)


def precheck(task: BatchTask) -> TaskResult | None:
    """Refuse a task whose request is bad (level, size, CRS) before any worker sees it."""
    from engine.jobs.prepared import prepare

    try:
        prepare(generate_request(task))
    except Text2EarthError as exc:
        return TaskResult(task.key, task.item.id, task.out, FAILED, 0.0,
                          f"{task.item.id}: {exc}", exc.kind)
    return None


class Progress:
    """tqdm: items done / failed / remaining, with its rate and ETA."""

    def __init__(self, total: int, quiet: bool):
        from tqdm import tqdm

        self.bar = tqdm(total=total, desc="batch", unit="item", file=sys.stderr,
                        disable=quiet or total == 0)
        self.done = self.failed = 0
        self.total = total

    def update(self, result: TaskResult) -> None:
        if result.status == FAILED:
            self.failed += 1
            self.bar.write(f"failed: {result.error}", file=sys.stderr)
        else:
            self.done += 1
        self.bar.set_postfix(done=self.done, failed=self.failed,
                             remaining=self.total - self.done - self.failed, refresh=False)
        self.bar.update(1)

    def close(self) -> None:
        self.bar.close()


def run_batch(options: BatchOptions, workers=None) -> BatchReport:
    """Run the batch; ``workers`` (InProcess / RayWorkers) may be given to reuse a loaded
    model or a running pool (tests, bench)."""
    start = time.perf_counter()
    if options.address and workers is None:
        check_reachable(options.address)  # in seconds, before any other work
    out_dir = Path(options.out_dir).expanduser()
    items, problems = read_items(options.items)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"cannot make the output folder {out_dir}: {exc.strerror}") from None
    _sweep(out_dir)
    report = BatchReport([_problem_result(p) for p in problems])
    tasks = tasks_for(items, out_dir, options.settings)
    todo: list[BatchTask] = []
    for task in tasks:
        if is_done(task):
            report.results.append(TaskResult(task.key, task.item.id, task.out, SKIPPED))
            continue
        refused = precheck(task)
        if refused is not None:
            report.results.append(refused)
        else:
            todo.append(task)
    progress = Progress(len(todo), options.quiet)
    own = workers is None
    try:
        if todo:
            if own:
                workers = _workers(options)
            for result in workers.run(todo):
                report.results.append(result)
                progress.update(result)
    finally:
        progress.close()
        if own and workers is not None:
            workers.close()
        _sweep(out_dir)
    outputs = [Path(r.out) for r in report.results if r.status in (DONE, SKIPPED)]
    failures = [r for r in report.results if r.status == FAILED]
    try:
        report.collection = write_collection(out_dir, outputs, failures)
        report.seconds = time.perf_counter() - start
        report.report = _write_report(out_dir, report)
    except (DiskFullError, WriteError) as exc:
        # The outputs are done and kept: say so, not "nothing was written".
        done = report.count(DONE) + report.count(SKIPPED)
        raise type(exc)(f"{done} output(s) are written in {out_dir}, but the catalog or the "
                        f"report could not be: {exc} Then run the same batch again: outputs "
                        "already written are kept and not made again.") from None
    return report


def _workers(options: BatchOptions):
    if not options.split_scenes:
        return make_workers(options.spec, options.workers, options.address,
                            options.runtime_env, options.gpus_per_worker, options.actor_env)
    from engine.batch.scene_split import RayWindows, SplitScenes

    windows = RayWindows(options.spec, options.workers, options.address, options.runtime_env,
                         options.gpus_per_worker)
    return SplitScenes(InProcess(options.spec), windows)


def _sweep(out_dir: Path) -> None:
    """Temp files of attempts that died (a killed worker) are removed; never a live one's."""
    from engine.jobs.leftovers import remove_stale

    try:
        # recursive: the items' STAC files are written through temp files in <id>/ too
        remove_stale(out_dir, recursive=True)
    except OSError:
        pass


def _write_report(out_dir: Path, report: BatchReport) -> Path:
    path = out_dir / REPORT
    body = {"done": report.count(DONE), "skipped": report.count(SKIPPED),
            "failed": report.count(FAILED), "seconds": round(report.seconds, 3),
            "collection": report.collection.name if report.collection else None,
            "results": [asdict(r) for r in sorted(report.results, key=lambda r: r.key)]}
    return write_json_text(path, json.dumps(body, indent=2))  # whole or not at all


__all__ = ["BatchOptions", "BatchReport", "InProcess", "run_batch"]
