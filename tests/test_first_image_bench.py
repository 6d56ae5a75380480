"""The first-image benchmark's plumbing (engine.bench.first_image) on the tiny checkpoint: a
cold service, a job submitted at once, the figures it reports consistent with each other."""

from __future__ import annotations

from engine.bench import first_image
from engine.model.checkpoint import load_model


def test_model_bytes_counts_what_a_loaded_model_holds(tiny_t2i):
    for precision in ("fp32", "bf16"):
        model = load_model(str(tiny_t2i), "cpu", precision=precision)
        held = sum(p.numel() * p.element_size() for part in ("unet", "vae", "text_encoder")
                   for p in getattr(model.pipeline, part).state_dict().values()
                   if p.is_floating_point())
        assert first_image.model_bytes(tiny_t2i, precision) == held
    assert first_image.model_bytes(tiny_t2i, "bf16") * 2 == first_image.model_bytes(
        tiny_t2i, "fp32")


def test_first_image_row_from_a_cold_service(tiny_t2i):
    row = first_image.first_image(tiny_t2i, "fp32", cold=False, steps=4)
    assert row["page_cache"] == "warm" and not row["page_cache_dropped"]
    assert 0 < row["service_answered_s"] < row["first_step_done_s"] <= row["image_done_s"]
    assert 0 < row["first_step_started_s"] < row["first_step_done_s"]
    assert row["per_step_s"] > 0
    # The service holds at least its model (and Python, torch, ...).
    assert row["peak_rss_gib"] > row["model_gib"] > 0
    assert set(row["phases_s"]) <= {"loading", "compiling"}
    # The row names the torch its service ran: this venv's, which this process imports too.
    import torch

    build = "CPU build" if torch.version.cuda is None else f"CUDA {torch.version.cuda} build"
    assert row["torch"] == f"{torch.__version__} ({build})"
    # Only a CUDA build maps CUDA libraries, and they are a part of the service's peak.
    assert (row["cuda_build_files_gib"] > 0) == (torch.version.cuda is not None)
    assert row["cuda_build_files_gib"] < row["peak_rss_gib"]
