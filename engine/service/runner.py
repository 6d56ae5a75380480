"""What running a job means: the warm model, progress, cancel, and memory-saving retries."""

from __future__ import annotations

import gc
import os
import threading
from dataclasses import dataclass
from pathlib import Path

import torch

from ..checkpoint import INPAINTING_MODEL, LoadedModel, load_model
from ..errors import GenerationCancelled, ModelNotFoundError, OutOfMemoryError, Text2EarthError
from ..generate import GenerateRequest, GenerateResult, generate, plan, scene_plan
from ..scene import JOINT, OUTPAINT
from .jobs import Job, JobCancelledError


@dataclass
class ServiceConfig:
    model: str | None
    device: str | None
    output_dirs: list[Path]
    max_pixels: int
    demo_fallback: bool = False


class ModelManager:
    """One model at a time, loaded once and reused; asking for another unloads the first."""

    def __init__(self, config: ServiceConfig) -> None:
        self.config = config
        self._lock = threading.Lock()
        self._loaded: LoadedModel | None = None
        self._key: tuple | None = None
        self.pipeline_check = False  # serving the built-in demo weights
        self.error: str | None = None

    def get(self, model: str | None = None, device: str | None = None,
            inpainting: bool = False) -> LoadedModel:
        default = INPAINTING_MODEL if inpainting else self.config.model
        key = (model or default, device or self.config.device)
        with self._lock:
            if self._loaded is not None and self._key == key:
                return self._loaded
            self._unload()
            try:
                loaded = load_model(key[0], key[1])
                self.pipeline_check = False
            except ModelNotFoundError as exc:
                if not self.config.demo_fallback:
                    self.error = str(exc)
                    raise
                from ..cli import demo_checkpoint_dir

                loaded = load_model(str(demo_checkpoint_dir(inpainting)), key[1])
                self.pipeline_check = True
            except Text2EarthError as exc:
                self.error = str(exc)
                raise
            self._loaded, self._key, self.error = loaded, key, None
            return loaded

    def _unload(self) -> None:
        if self._loaded is None:
            return
        device = self._loaded.device
        self._loaded = self._key = None
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()

    def describe(self) -> list[dict]:
        model = self._loaded
        if model is None:
            return []
        return [{
            "model_id": model.checkpoint.model_id,
            "weights_sha256": model.weights_sha256,
            "device": str(model.device),
            "dtype": str(model.dtype).removeprefix("torch."),
            "pipeline_check": self.pipeline_check,
        }]


def device_info(device: str | None) -> dict:
    """What /health reports: the device jobs run on, its name and memory."""
    name = (device or "auto").lower()
    if torch.cuda.is_available() and (name == "auto" or name.startswith("cuda")):
        index = torch.device("cuda" if name == "auto" else name).index or 0
        free, total = torch.cuda.mem_get_info(index)
        return {"type": "cuda", "name": torch.cuda.get_device_name(index),
                "memory_total": total, "memory_free": free}
    mps = getattr(torch.backends, "mps", None)
    if name in ("auto", "mps") and mps is not None and mps.is_available():
        return {"type": "mps", "name": "Apple MPS", "memory_total": None, "memory_free": None}
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        free = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        total = free = None
    return {"type": "cpu", "name": f"CPU ({os.cpu_count()} cores)",
            "memory_total": total, "memory_free": free}


def _save_memory(model: LoadedModel) -> None:
    model.pipeline.enable_attention_slicing()
    model.pipeline.vae.enable_tiling()


def run_generate(job: Job, models: ModelManager) -> dict:
    request: GenerateRequest = job.request
    model = None
    if scene_plan(request, plan(request)) is not None and request.scene_method != JOINT:
        try:  # scenes are outpainted with the inpainting model when it can be had
            model = models.get(job.inpaint_model, inpainting=True)
        except ModelNotFoundError:
            if request.scene_method == OUTPAINT:
                raise
    if model is None:
        model = models.get(job.model)
    if models.pipeline_check and not request.pipeline_check:
        from ..cli import pipeline_check_path

        request.out = pipeline_check_path(str(request.out))
        request.pipeline_check = True
        job.out = str(request.out)

    def on_step(pipe, step, timestep, tensors):
        job.report_step(step + 1, tensors.get("tile", 1),
                        tensors["latents"][0].detach().float().cpu().numpy(),
                        tensors.get("tiles", 1))
        if job.cancel_requested.is_set():
            pipe.cancel()
        return tensors

    try:
        try:
            result = generate(request, model, on_step)
        except OutOfMemoryError:
            if model.device.type != "cuda":
                raise
            # Once more with attention slicing and VAE tiling before giving up.
            torch.cuda.empty_cache()
            _save_memory(model)
            job.step = 0
            result = generate(request, model, on_step)
    except GenerationCancelled:
        raise JobCancelledError() from None
    return describe_result(job, result)


def describe_result(job: Job, result: GenerateResult) -> dict:
    grid = result.grid
    left, bottom, right, top = grid.bounds
    authority = grid.crs.to_authority()
    return {
        "id": job.id,
        "path": str(result.path),
        "bounds": [left, bottom, right, top],
        "crs_wkt": grid.crs.to_wkt(),
        "crs_authid": ":".join(authority) if authority else None,
        "width": grid.width,
        "height": grid.height,
        "level": grid.level,
        "level_choice": grid.level_choice.message,
        "ground_resolution_m": grid.ground_resolution,
        "seed": result.seed,
        "tags": result.tags,
    }
