"""Is the GPU used, and if not, why: what /health reports and the dock shows."""

from __future__ import annotations

from functools import cache

from text2earth_qgis.core.contract.gpu_driver import detect_nvidia_driver


def gpu_report(requested: str | None, cuda_available: bool, torch_cuda: str | None,
               driver: str | None, mps_available: bool = False,
               last_oom: str | None = None) -> dict:
    """Pure: the facts in, one of a few reasons out (each with what to do)."""
    requested = (requested or "auto").lower()
    facts = {"torch_cuda": torch_cuda, "nvidia_driver": driver, "last_oom": last_oom}
    if requested != "auto" and requested.startswith("cpu"):
        return {"gpu_used": False, "reason": "device set to cpu in the settings", **facts}
    if cuda_available and not requested.startswith("mps"):
        reason = "NVIDIA GPU in use"
        if last_oom:
            reason += f"; the last job ran out of GPU memory ({last_oom})"
        return {"gpu_used": True, "reason": reason, **facts}
    if mps_available and requested in ("auto", "mps"):
        return {"gpu_used": True, "reason": "Apple GPU (MPS) in use", **facts}
    if driver is None:
        # Most machines without a driver have no NVIDIA GPU: no advice, only the fact.
        reason = "no NVIDIA driver found"
    elif torch_cuda is None:
        reason = (f"this torch is a CPU-only build although NVIDIA driver {driver} is present: "
                  "run Set up engine again to install the CUDA build")
    else:
        reason = (f"torch's CUDA {torch_cuda} cannot use NVIDIA driver {driver} (too old?): "
                  "update the driver")
    return {"gpu_used": False, "reason": reason, **facts}


def device_report(requested: str | None, last_oom: str | None = None,
                  driver: str | None = None) -> dict:
    import torch

    mps = getattr(torch.backends, "mps", None)
    cuda = torch.cuda.is_available()
    if not cuda and driver is None:
        driver = _driver()
    return gpu_report(requested, cuda, torch.version.cuda, driver,
                      bool(mps is not None and mps.is_available()), last_oom)


@cache
def _driver() -> str | None:
    return detect_nvidia_driver(timeout=5.0)  # once: /health is asked often
