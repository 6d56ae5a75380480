"""FID and KID with torchmetrics on features computed once per image.

Features: by default the standard FID network, Inception-v3 with the TensorFlow weights
``pt_inception-2015-12-05`` (converted by torch-fidelity:
weights-inception-2015-12-05-6726825d.pth),
2048-d pool3 features, images resized inside the network to 299 px with TF1's bilinear rule;
exactly what torchmetrics' FrechetInceptionDistance(feature=2048) runs (it builds the same
torch-fidelity module). Any other torch module mapping uint8 (N, 3, H, W) to (N, D) may be
passed instead (the tests pass a tiny one).

The features of each set are extracted once and handed to torchmetrics' FID and KID through a
pass-through "feature extractor", so the same numbers serve FID, KID and the per-level
breakdown without running Inception three times.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from pathlib import Path

import numpy as np
import torch

from engine.errors import InputError, ModelNotFoundError

INCEPTION_FILE = "weights-inception-2015-12-05-6726825d.pth"
INCEPTION_SHA256_PREFIX = "6726825d"  # torch hub's convention: the name carries the hash's head
INCEPTION_URL = ("https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/"
                 + INCEPTION_FILE)
FID_WEIGHTS_ENV = "TEXT2EARTH_FID_WEIGHTS"
FEATURES_NAME = ("Inception-v3 pt_inception-2015-12-05 (TF FID weights via torch-fidelity), "
                 "pool3 2048-d, 299 px TF-bilinear resize: torchmetrics "
                 "FrechetInceptionDistance(feature=2048)")
KID_SUBSETS = 100  # torch-fidelity's and torchmetrics' defaults
KID_SUBSET_SIZE = 1000


def default_weights_path() -> Path:
    """Where torchmetrics / torch-fidelity would keep the weights after a download: torch hub's
    checkpoint cache ($TORCH_HOME/hub/checkpoints)."""
    return Path(torch.hub.get_dir()) / "checkpoints" / INCEPTION_FILE


def missing_weights_advice(path: Path) -> str:
    return (f"FID and KID need the standard Inception-v3 weights ({INCEPTION_FILE}, "
            f"the 2048-d pt_inception-2015-12-05 features every published FID uses), not found at "
            f"{path}. Download {INCEPTION_URL} where there is internet and put it there, or pass "
            f"its path with --fid-weights or ${FID_WEIGHTS_ENV}")


def standard_feature_extractor(weights: str | Path | None = None,
                               device: str = "cpu") -> torch.nn.Module:
    """torchmetrics' Inception-v3 (torch-fidelity's module) on local weights; never downloads."""
    path = Path(weights or os.environ.get(FID_WEIGHTS_ENV) or default_weights_path()).expanduser()
    if not path.is_file():
        raise ModelNotFoundError(missing_weights_advice(path))
    try:
        # A plain tensor file loads with weights_only; anything that needs code to unpickle
        # is refused before torch-fidelity (which loads it without that guard) sees it.
        torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - corrupt, truncated or not a state dict
        raise InputError(f"{path} is not a plain weights file ({type(exc).__name__}); expected "
                         f"{INCEPTION_FILE}") from None
    from torchmetrics.image.fid import NoTrainInceptionV3

    try:
        network = NoTrainInceptionV3(name="inception-v3-compat", features_list=["2048"],
                                     feature_extractor_weights_path=str(path))
    except RuntimeError as exc:  # wrong keys or shapes
        raise InputError(f"{path} does not hold the Inception-v3 FID weights: "
                         f"{str(exc).splitlines()[0][:200]}") from None
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 22):
            digest.update(chunk)
    network.weights_sha256 = digest.hexdigest()  # the report says whether they are the standard
    return network.to(device)


def describe(extractor: torch.nn.Module) -> str:
    """What the features are, for the report."""
    from torchmetrics.image.fid import NoTrainInceptionV3

    if isinstance(extractor, NoTrainInceptionV3):
        digest = getattr(extractor, "weights_sha256", "")
        if digest.startswith(INCEPTION_SHA256_PREFIX):
            return FEATURES_NAME
        return (f"Inception-v3 (torch-fidelity's network) with NON-standard weights, sha256 "
                f"{digest[:16]}...: not the FID every paper reports")
    return f"custom feature extractor {type(extractor).__name__} (not comparable to any FID)"


@torch.no_grad()
def extract(extractor: torch.nn.Module, images: list, device: str = "cpu") -> torch.Tensor:
    """(N, D) float64 features of uint8 (H, W, 3) images."""
    batch = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous()
    return extractor(batch.to(device)).reshape(len(images), -1).double().cpu()


class _Features(torch.nn.Module):
    """Hands precomputed features to a torchmetrics metric as if it had extracted them."""

    def __init__(self, num_features: int):
        super().__init__()
        self.num_features = num_features

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return features


def fid(real: torch.Tensor, fake: torch.Tensor) -> float:
    """torchmetrics' FID between two (N, D) feature sets (each N >= 2)."""
    from torchmetrics.image.fid import FrechetInceptionDistance

    metric = FrechetInceptionDistance(feature=_Features(real.shape[1]))
    metric.update(real, real=True)
    metric.update(fake, real=False)
    return float(metric.compute())


def kid(real: torch.Tensor, fake: torch.Tensor, seed: int = 0) -> dict:
    """torchmetrics' KID (cubic polynomial kernel, unbiased MMD over random subsets): mean, std,
    and the subset size used: 1000, or all of the smaller set when it has fewer images."""
    from torchmetrics.image.kid import KernelInceptionDistance

    subset_size = min(KID_SUBSET_SIZE, len(real), len(fake))
    with warnings.catch_warnings():  # "will save all extracted features": features are small
        warnings.simplefilter("ignore", UserWarning)
        metric = KernelInceptionDistance(feature=_Features(real.shape[1]), subsets=KID_SUBSETS,
                                         subset_size=subset_size)
    metric.update(real, real=True)
    metric.update(fake, real=False)
    with torch.random.fork_rng(devices=[]):  # the subsets are drawn with torch's global RNG
        torch.manual_seed(seed)
        mean, std = metric.compute()
    return {"mean": float(mean), "std": float(std), "subset_size": subset_size,
            "subsets": KID_SUBSETS}
