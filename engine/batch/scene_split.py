"""One huge outpainted scene over many Ray workers.

engine.scenes.window_batch proves which windows are independent: those of one wavefront
(``k = ix + (r + 1) * iy``) never overlap, and each reads only canvas pixels that earlier
wavefronts wrote. So the driver runs the ordinary scene job (engine.scenes.run: scratch
raster, resume state, blending, the COG at the end) and hands each wavefront's windows to
:class:`RayWindows`: every actor holds the inpainting model (loaded once) and returns the
generated window; the driver blends it into the scratch as in one process. Each window is one
UNet call of batch 1 from its own seed (``tile_seed``), so the pixels equal a one-process run
with ``window_batch=1`` (fp32, same thread count).

Joint denoising stays on one machine: at every one of its denoising steps, each window's
noise prediction is averaged into one shared latent canvas before any window can take the
next step, so the workers would meet at a barrier ``steps`` times per scene and ship their
latent crops both ways each time; the windows are never independent for a whole run.

Scratch on a cluster: the scratch raster is written only by the driver, so it needs no
shared file system; the windows' pixels travel through Ray's object store (a 512 px window is
0.75 MiB each way). The driver is the only writer and the state file records finished
windows, so a driver that dies resumes like any scene. On a shared file system (NFS, Lustre)
or an object store (S3 via GDAL's /vsis3/), only the final COG needs to live there.
"""

from __future__ import annotations

import os

import numpy as np

from engine.batch.workers import (
    MAX_RESTARTS,
    READY_TIMEOUT_S,
    ClusterError,
    ModelSpec,
    actor_resources,
    check_workers,
    load,
    missing_module,
    shipping_advice,
    start_ray,
)


class WindowWorker:
    """A Ray actor's body: the inpainting model loaded once; one window per call."""

    def __init__(self, spec: ModelSpec):
        import ray

        self.model = load(spec, spec.device or ("cuda" if ray.get_gpu_ids() else "cpu"))

    def ready(self) -> int:
        return os.getpid()

    def paint(self, scheduler: tuple[str, dict], prompt: str, existing: np.ndarray,
              mask: np.ndarray, seed: int, level: int, negative: str | None, steps: int,
              guidance: float) -> np.ndarray:
        import diffusers
        import torch

        pipe = self.model.pipeline
        name, config = scheduler
        pipe.scheduler = getattr(diffusers, name).from_config(config)  # the driver's
        return pipe.inpaint_batch([prompt], [existing], [mask], level, negative, steps,
                                  guidance, [torch.Generator("cpu").manual_seed(seed)]).images[0]


class RayWindows:
    """The window executor of engine.scenes.window_batch on ``workers`` Ray actors."""

    def __init__(self, spec: ModelSpec, workers: int, address: str | None = None,
                 runtime_env: dict | None = None, gpus_per_worker: float | None = None):
        import ray

        self.address = address
        self.started = start_ray(address, workers, runtime_env)
        try:
            check_workers(address)
            cls = ray.remote(max_restarts=MAX_RESTARTS, max_task_retries=MAX_RESTARTS)(
                WindowWorker)
            options = actor_resources(workers, gpus_per_worker)
            self.actors = [cls.options(**options).remote(spec) for _ in range(workers)]
            try:
                self.pids = ray.get([a.ready.remote() for a in self.actors],
                                    timeout=READY_TIMEOUT_S)
            except Exception as exc:  # noqa: BLE001 - a worker that could not load the model
                name = missing_module(exc)
                if name is not None:
                    raise ClusterError(shipping_advice(address, name)) from None
                raise ClusterError(f"the Ray workers could not load the model: "
                                   f"{str(exc).strip().splitlines()[-1]}") from None
        except BaseException:
            self.close()
            raise

    def outpaint(self, pipe, job, prompts, existing, masks, seeds) -> list[np.ndarray]:
        import ray

        scheduler = (type(pipe.scheduler).__name__, dict(pipe.scheduler.config))
        refs = [self.actors[i % len(self.actors)].paint.remote(
                    scheduler, prompt, before, mask, seed, job.level, job.negative_prompt,
                    job.steps, job.guidance)
                for i, (prompt, before, mask, seed)
                in enumerate(zip(prompts, existing, masks, seeds, strict=True))]
        return ray.get(refs)

    def close(self) -> None:
        import ray

        for actor in getattr(self, "actors", []):
            ray.kill(actor)
        if self.started:
            ray.shutdown()


class SplitScenes:
    """Batch workers for a few huge extents: the items run one after the other on the
    driver (``local``), each scene's wavefronts on ``windows``' Ray actors."""

    def __init__(self, local, windows: RayWindows):
        self.local, self.windows = local, windows

    def run(self, tasks):
        from engine.scenes.window_batch import window_executor

        with window_executor(self.windows):
            yield from self.local.run(tasks)

    def close(self) -> None:
        self.windows.close()
        self.local.close()


def generate_split(request, model, executor: RayWindows):
    """engine.jobs.generate.generate for one scene, its wavefronts on ``executor``'s
    workers. ``model`` (the driver's) is used for the job's checks and tags only: the
    windows are made on the workers."""
    from engine.jobs.generate import generate
    from engine.scenes.window_batch import window_executor

    with window_executor(executor):
        return generate(request, model)
