"""The first-image benchmark's plumbing (engine.bench.first_image) on the tiny checkpoint: a
cold service, a job submitted at once, the figures it reports consistent with each other."""

from __future__ import annotations

from pathlib import Path

from engine.bench import first_image
from engine.model.checkpoint import load_model

ROOT = Path(__file__).resolve().parents[1]


def test_model_bytes_counts_what_a_loaded_model_holds(tiny_t2i):
    for precision in ("fp32", "bf16"):
        model = load_model(str(tiny_t2i), "cpu", precision=precision)
        held = sum(p.numel() * p.element_size() for part in ("unet", "vae", "text_encoder")
                   for p in getattr(model.pipeline, part).state_dict().values()
                   if p.is_floating_point())
        assert first_image.model_bytes(tiny_t2i, precision) == held
    assert first_image.model_bytes(tiny_t2i, "bf16") * 2 == first_image.model_bytes(
        tiny_t2i, "fp32")


def test_first_image_row_from_a_cold_service(tiny_t2i, capsys):
    row = first_image.first_image(tiny_t2i, "fp32", cold=False, steps=4)
    assert row["page_cache"] == "warm" and not row["page_cache_dropped"]
    assert 0 < row["service_answered_s"] < row["first_step_done_s"] <= row["image_done_s"]
    assert 0 < row["first_step_started_s"] < row["first_step_done_s"]
    assert row["per_step_s"] > 0
    # The service holds at least its model (and Python, torch, ...).
    assert row["peak_rss_gib"] > row["model_gib"] > 0
    assert set(row["phases_s"]) <= {"loading", "compiling"}
    # The row names the torch its service ran: this venv's, installed from requirements.txt.
    import torch

    pin = next(line.split("==")[1] for line in (ROOT / "requirements.txt").read_text().splitlines()
               if line.startswith("torch=="))
    assert (row["torch"], row["torch_cuda"]) == (torch.__version__, torch.version.cuda)
    assert torch.__version__.split("+")[0] == pin and row["torch_pinned"] is True
    # Only a CUDA build maps CUDA libraries, and they are a part of the service's peak.
    assert (row["cuda_build_files_gib"] > 0) == (torch.version.cuda is not None)
    first_image.print_row(row)
    printed = capsys.readouterr().out
    # The memory goal is judged on the CPU build only; a CUDA row says it is for comparison.
    assert ("(goal < 1)" in printed) == (torch.version.cuda is None)
    assert ("for comparison" in printed) == (torch.version.cuda is not None)


SMAPS = """\
7f0000000000-7f0000400000 r-xp 00000000 08:01 1234 /home/Jo Doe/env/nvidia/cu13/libcublasLt.so.13
Size:               4096 kB
Rss:                3000 kB
Pss:                3000 kB
VmFlags: rd ex mr mw me
7f0000400000-7f0000500000 rw-p 00000000 00:00 0
Size:               1024 kB
Rss:                 700 kB
VmFlags: rd wr mr mw me ac
7f0000500000-7f0000600000 r--p 00010000 08:01 99         /opt/env/torch/lib/libtorch_cuda.so
Rss:                  40 kB
7f0000600000-7f0000700000 r--p 00000000 08:01 98         /opt/env/torch/lib/libtorch_cpu.so
Rss:                5000 kB
555500000000-555500100000 rw-p 00000000 00:00 0          [heap]
Rss:                 900 kB
7f0000700000-7f0000800000 r-xp 00000000 08:01 97         /opt/env/triton/_C/libtriton.so
Rss:                 300 kB
"""


def test_cuda_build_bytes_counts_only_the_cuda_builds_files():
    from engine.bench.memory import cuda_build_bytes

    # cuBLASLt (under a folder with a space), libtorch_cuda and triton; not the anonymous
    # mapping after cuBLASLt, libtorch_cpu or the heap.
    assert cuda_build_bytes(SMAPS.splitlines()) == (3000 + 40 + 300) * 1024
