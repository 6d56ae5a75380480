"""Time to the first image from a cold `text2earth serve` (issue "Speed", goal 2): full-size
random weights written the way the hub ships Text2Earth (a diffusers folder of safetensors,
the UNet in fp16, the text encoder and VAE in fp32), a job submitted the moment the service
answers, and what the user waits through: the service's start, the model's load (phases
from the job's ``waiting_for_model``), the first denoising step; and the service's peak RSS
against the loaded model's size (goal: under the bf16 model + 1 GiB).

"warm": page cache holding the weights (a second start); "cold": the page cache dropped first
(needs root: /proc/sys/vm/drop_caches; the row says when it could not be dropped).

Each row names the torch build its service ran on. A machine without an NVIDIA GPU gets the CPU
build from the set-up (text2earth_qgis.core.setup.venv_setup.choose_torch_build); the CUDA build
maps its CUDA libraries and triton into every process, GPU or not (the row's
``cuda_build_files_gib``: their resident pages in /proc/PID/smaps at the job's end), so the
memory goal is judged on the CPU build's rows (`make bench` makes that engine:
build/bench-cpu-torch; a row says when its torch is not the pinned version).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from engine.bench.baseline import GUIDANCE, LEVEL, SIZE
from engine.bench.memory import cuda_build_rss, process_peak_rss
from text2earth_qgis.core.contract.child_process import clean_env
from text2earth_qgis.core.contract.scale import mercator_resolution

GOAL_WARM_S, GOAL_COLD_S = 8.0, 15.0  # first step started, from the service's start
REQUIREMENTS = Path(__file__).resolve().parents[2] / "requirements.txt"
PINNED_TORCH = next((line.split("==", 1)[1].strip() for line in
                     REQUIREMENTS.read_text(encoding="utf-8").splitlines()
                     if line.startswith("torch==")), None)
GIB = 2 ** 30


def hub_like_checkpoint(folder: Path) -> Path:
    """Full-size random weights in the hub's layout and dtypes (written once, reused): the
    UNet in fp16, the text encoder as transformers 4 saved it (names under ``text_model.``,
    CLIP's position ids stored), and its hash remembered, as a hub cache's blob names give it
    (engine.model.checkpoint), so that a start does not read 3.4 GB to hash them."""
    import torch
    from safetensors.torch import load_file, save_file

    from engine.model.checkpoint import weights_sha256
    from engine.model.tiny_checkpoint import write_checkpoint

    if not (folder / "model_index.json").is_file():
        write_checkpoint(folder, full_size=True, unet_dtype=torch.float16)
        weights = folder / "text_encoder" / "model.safetensors"
        tensors = {f"text_model.{k}": v for k, v in load_file(weights).items()}
        tensors["text_model.embeddings.position_ids"] = torch.arange(77).unsqueeze(0)
        save_file(tensors, weights, metadata={"format": "pt"})
        del tensors
    weights_sha256(folder)
    return folder


def drop_page_cache() -> bool:
    os.sync()
    try:
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
    except OSError:
        return False
    return True


def model_bytes(checkpoint: Path, precision: str) -> int:
    """Bytes of the weights once loaded in ``precision`` (counted from the files' headers)."""
    from safetensors import safe_open

    from engine.model.precision import part_dtypes

    total = 0
    for part, dtype in part_dtypes(precision).items():
        for file in (checkpoint / part).glob("*.safetensors"):
            with safe_open(file, framework="pt") as handle:
                for name in handle.keys():
                    count = 1
                    for side in handle.get_slice(name).get_shape():
                        count *= side
                    total += count * dtype.itemsize
    return total


def torch_build(python: str) -> dict:
    """The torch an engine Python imports, in the environment the service gets:
    ``{"torch": "2.14.1+cu130", "torch_cuda": "13.0" (None: the CPU build), "torch_pinned":
    whether it is requirements.txt's version}``."""
    probe = "import json, torch; print(json.dumps([torch.__version__, torch.version.cuda]))"
    answer = subprocess.run([python, "-c", probe], capture_output=True, text=True, check=True,
                            env=clean_env())
    version, cuda = json.loads(answer.stdout.strip().splitlines()[-1])
    return {"torch": version, "torch_cuda": cuda,
            "torch_pinned": version.split("+")[0] == PINNED_TORCH}


def first_image(checkpoint: Path, precision: str, cold: bool, steps: int = 4,
                extra_args: tuple[str, ...] = (), python: str = sys.executable) -> dict:
    """One cold service start on ``checkpoint`` from the engine Python ``python`` and its first
    job, timed from the spawn."""
    from text2earth_qgis.core.service.client import start_local_service

    dropped = drop_page_cache() if cold else False
    out_dir = Path(tempfile.mkdtemp(prefix="t2e-first-image-"))
    side = SIZE * mercator_resolution(LEVEL)
    job = dict(bbox=[920000.0, 6250000.0, 920000.0 + side, 6250000.0 + side], crs="EPSG:3857",
               prompt="a park", level=LEVEL, seed=1, steps=steps, guidance=GUIDANCE,
               out="first.tif", overwrite=True)
    start = time.perf_counter()
    service = start_local_service(python, [str(out_dir)], str(checkpoint), "cpu",
                                  extra_args=["--precision", precision, *extra_args],
                                  timeout=600)
    answered = time.perf_counter() - start
    phases: dict[str, float] = {}  # phase -> longest seconds seen in it
    step_at: dict[int, float] = {}
    try:
        job_id = service.client.submit(job)["id"]
        version = None
        while True:
            # Long polls: answered the moment the job changes (a step), without busy polling
            # that would take a core from the service.
            status = service.client.status(job_id, since=version, wait_s=0.5)
            version = status.get("version")
            now = time.perf_counter() - start
            waiting = status.get("waiting_for_model") or {}
            if waiting.get("phase"):
                phases[waiting["phase"]] = max(phases.get(waiting["phase"], 0.0),
                                               waiting.get("seconds") or 0.0)
            step = status.get("step") or 0
            for done in range(1, step + 1):
                step_at.setdefault(done, now)
            if status.get("state") in ("done", "failed", "cancelled"):
                break
        if status["state"] != "done":
            raise RuntimeError(f"first-image job {status['state']}: {status.get('error')}")
        done_s = time.perf_counter() - start
        peak = process_peak_rss(service.process.pid)
        cuda_files = cuda_build_rss(service.process.pid)
    finally:
        service.stop()
    # Steps before the last: the last one's report comes with the decode and the write.
    last = steps - 1
    per_step = (step_at[last] - step_at[1]) / (last - 1) if last > 1 else None
    first_start = step_at[1] - per_step if per_step is not None else None
    weights = model_bytes(checkpoint, precision)
    row = {"precision": precision, **torch_build(python),
           "page_cache": "cold" if cold else "warm", "page_cache_dropped": dropped,
           "service_answered_s": round(answered, 2),
           "phases_s": {k: round(v, 2) for k, v in phases.items()},
           "first_step_started_s": round(first_start, 2) if first_start is not None else None,
           "first_step_done_s": round(step_at[1], 2), "per_step_s": round(per_step or 0, 3),
           "image_done_s": round(done_s, 2), "steps": steps,
           "peak_rss_gib": round(peak / GIB, 3) if peak else None,
           "model_gib": round(weights / GIB, 3),
           "peak_over_model_gib": round((peak - weights) / GIB, 3) if peak else None,
           "cuda_build_files_gib": round(cuda_files / GIB, 3) if cuda_files is not None else None}
    return row


def print_row(row: dict) -> None:
    goal = GOAL_COLD_S if row["page_cache"] == "cold" else GOAL_WARM_S
    cache = row["page_cache"] + ("" if row["page_cache"] == "warm" or row["page_cache_dropped"]
                                 else " (could not drop: not root)")
    phases = ", ".join(f"{k} {v:.1f} s" for k, v in row["phases_s"].items()) or "none seen"
    build = f"CUDA {row['torch_cuda']} build" if row["torch_cuda"] else "CPU build"
    pinned = "" if row["torch_pinned"] else f", not the pinned {PINNED_TORCH}"
    if row["torch_cuda"]:
        memory_goal = (f"for comparison: the goal is judged on the CPU build; the CUDA build's "
                       f"library files {row['cuda_build_files_gib']} GiB of it, its anonymous "
                       "memory on top")
    else:
        memory_goal = "goal < 1"
    print(f"  first image, {row['precision']}, torch {row['torch']} ({build}{pinned}), page "
          f"cache {cache}: service answered {row['service_answered_s']:.1f} s; waited for the "
          f"model: {phases}; first step started {row['first_step_started_s']} s (goal "
          f"{goal:.0f} s), done {row['first_step_done_s']:.1f} s, {row['per_step_s']:.2f} "
          f"s/step; {row['steps']}-step image {row['image_done_s']:.1f} s; peak RSS "
          f"{row['peak_rss_gib']} GiB = model {row['model_gib']} GiB + "
          f"{row['peak_over_model_gib']} GiB ({memory_goal})", flush=True)


def main(folder: Path, precisions: tuple[str, ...] = ("bf16",),
         pythons: tuple[str, ...] = (sys.executable,)) -> list[dict]:
    """Cold and warm rows per precision and engine Python (this venv's first)."""
    checkpoint = hub_like_checkpoint(folder)
    rows = []
    for python in pythons:
        for precision in precisions:
            for cold in (True, False):
                rows.append(first_image(checkpoint, precision, cold, python=python))
                print_row(rows[-1])
    return rows
