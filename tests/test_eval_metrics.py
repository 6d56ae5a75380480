"""The evaluation's numbers, each held to an independent computation: FID to the Fréchet
formula with scipy's matrix square root and to torchmetrics run on the images themselves, KID
to the unbiased MMD written out in numpy, CLIP scores to transformers' own forward passes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import scipy.linalg
import torch

from engine.errors import InputError, ModelNotFoundError
from engine.quality import fid as fid_metrics
from engine.quality.clip_scores import clip_scores, load_general_clip


class TinyFeatures(torch.nn.Module):
    """A fixed random conv net, uint8 (N, 3, H, W) -> (N, 16): a stand-in for Inception."""

    num_features = 16

    def __init__(self, seed: int = 0):
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        self.conv = torch.nn.Conv2d(3, 16, 8, stride=8)
        with torch.no_grad():
            self.conv.weight.copy_(torch.randn(self.conv.weight.shape, generator=generator) / 8)
            self.conv.bias.zero_()

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.conv(images.float() / 255.0))
        return x.mean(dim=(2, 3))


def random_images(n: int, size: int, seed: int, bright: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 200, (n, 1, 1, 3))
    noise = rng.integers(0, 56, (n, size, size, 3))
    return list(np.clip(base + noise + bright, 0, 255).astype(np.uint8))


def frechet_reference(a: np.ndarray, b: np.ndarray) -> float:
    """pytorch-fid's formula: |mu1 - mu2|^2 + Tr(S1 + S2 - 2 sqrtm(S1 S2))."""
    mu1, mu2 = a.mean(0), b.mean(0)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = scipy.linalg.sqrtm(s1 @ s2).real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * covmean))


def kid_reference(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased MMD^2 with k(a, b) = (a.b / d + 1)^3 (Bińkowski et al.)."""
    d, m = x.shape[1], len(x)
    kxx, kyy, kxy = ((p @ q.T / d + 1) ** 3 for p, q in ((x, x), (y, y), (x, y)))
    off = (kxx.sum() - np.trace(kxx) + kyy.sum() - np.trace(kyy)) / (m * (m - 1))
    return float(off - 2 * kxy.mean())


def test_fid_of_identical_sets_is_zero():
    features = fid_metrics.extract(TinyFeatures(), random_images(12, 64, 1))
    assert abs(fid_metrics.fid(features, features.clone())) < 1e-6


def test_fid_matches_the_frechet_formula():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(60, 8))
    b = rng.normal(loc=0.3, scale=1.4, size=(50, 8))
    ours = fid_metrics.fid(torch.from_numpy(a), torch.from_numpy(b))
    assert ours == pytest.approx(frechet_reference(a, b), rel=1e-6)
    assert ours > 1.0  # not a vacuous match


def test_fid_matches_torchmetrics_running_the_extractor_on_the_images():
    from torchmetrics.image.fid import FrechetInceptionDistance

    extractor = TinyFeatures()
    real, fake = random_images(10, 64, 2), random_images(9, 64, 3, bright=40)
    reference = FrechetInceptionDistance(feature=extractor)  # uint8 in, as with Inception
    reference.update(torch.from_numpy(np.stack(real)).permute(0, 3, 1, 2), real=True)
    reference.update(torch.from_numpy(np.stack(fake)).permute(0, 3, 1, 2), real=False)
    expected = float(reference.compute())
    ours = fid_metrics.fid(fid_metrics.extract(extractor, real),
                           fid_metrics.extract(extractor, fake))
    assert ours == pytest.approx(expected, rel=1e-5)
    assert expected > 1e-3


def test_kid_matches_the_unbiased_mmd_when_a_subset_is_the_whole_set():
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(30, 6)), rng.normal(loc=0.5, size=(30, 6))
    result = fid_metrics.kid(torch.from_numpy(x), torch.from_numpy(y))
    assert result["subset_size"] == 30
    assert result["mean"] == pytest.approx(kid_reference(x, y), rel=1e-6)
    assert result["std"] == pytest.approx(0.0, abs=1e-9)  # every subset is the whole set


def test_kid_is_reproducible_with_random_subsets():
    rng = np.random.default_rng(2)
    x, y = torch.from_numpy(rng.normal(size=(40, 6))), torch.from_numpy(rng.normal(size=(25, 6)))
    first, second = fid_metrics.kid(x, y), fid_metrics.kid(x, y)
    assert first == second and first["subset_size"] == 25 and first["std"] > 0


def test_missing_inception_weights_is_one_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.delenv(fid_metrics.FID_WEIGHTS_ENV, raising=False)
    with pytest.raises(ModelNotFoundError) as err:
        fid_metrics.standard_feature_extractor()
    message = str(err.value)
    assert fid_metrics.INCEPTION_FILE in message and "\n" not in message
    assert str(tmp_path / "torch" / "hub" / "checkpoints") in message


@pytest.fixture(scope="module")
def random_inception_weights(tmp_path_factory) -> Path:
    """torch-fidelity's Inception-v3 with random weights, saved as a plain state dict (fp16)."""
    import torch_fidelity.feature_extractor_inceptionv3 as tf_inception

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(tf_inception, "load_state_dict_from_url", lambda *a, **k: None)
        patch.setattr(tf_inception.FeatureExtractorInceptionV3, "load_state_dict",
                      lambda self, state: None)
        network = tf_inception.FeatureExtractorInceptionV3("inception-v3-compat", ["2048"])
    path = tmp_path_factory.mktemp("inception") / fid_metrics.INCEPTION_FILE
    torch.save({k: v.half() for k, v in network.state_dict().items()}, path)
    return path


def test_the_standard_extractor_loads_local_weights_and_gives_2048_features(
        random_inception_weights, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))  # found through torch hub's cache, too
    cache = tmp_path / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    (cache / fid_metrics.INCEPTION_FILE).symlink_to(random_inception_weights)
    network = fid_metrics.standard_feature_extractor()
    features = fid_metrics.extract(network, random_images(2, 64, 4))
    assert features.shape == (2, 2048) and torch.isfinite(features).all()
    # random weights are not the standard ones, and the report must not claim they are
    assert "NON-standard weights" in fid_metrics.describe(network)


def test_a_weights_file_that_needs_code_to_load_is_refused(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"net": InputError("not a tensor")}, path)
    with pytest.raises(InputError, match="not a plain weights file"):
        fid_metrics.standard_feature_extractor(path)


def write_tiny_clip(folder: Path) -> Path:
    """A random tiny CLIPModel with the real CLIP BPE tokenizer, saved as safetensors."""
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor

    from engine.model.tiny_checkpoint import write_clip_tokenizer

    tokenizer = write_clip_tokenizer(folder)
    config = CLIPConfig(
        text_config=dict(vocab_size=tokenizer.vocab_size, hidden_size=32, intermediate_size=64,
                         num_hidden_layers=2, num_attention_heads=2, max_position_embeddings=77,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=0),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                           num_attention_heads=2, image_size=32, patch_size=8),
        projection_dim=16)
    torch.manual_seed(0)
    CLIPModel(config).save_pretrained(folder)
    processor = CLIPProcessor(image_processor=CLIPImageProcessor(
        size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}), tokenizer=tokenizer)
    processor.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory) -> Path:
    return write_tiny_clip(tmp_path_factory.mktemp("clip") / "clip-tiny")


CAPTIONS = ["dense residential area", "a river through forest", "an airport runway",
            "farmland with circular fields", "a harbour with ships"]


def test_general_clip_score_matches_transformers_forward(tiny_clip):
    from transformers import CLIPModel, CLIPProcessor

    images = random_images(5, 32, 5)
    scorer = load_general_clip(str(tiny_clip))
    ours = clip_scores(scorer.embed_images(images), scorer.embed_texts(CAPTIONS))

    model = CLIPModel.from_pretrained(tiny_clip).eval()
    processor = CLIPProcessor.from_pretrained(tiny_clip)
    with torch.no_grad():
        out = model(**processor(text=CAPTIONS, images=images, return_tensors="pt", padding=True))
        cosine = (out.logits_per_image / model.logit_scale.exp()).diagonal().double().numpy()
    np.testing.assert_allclose(ours, 100 * np.clip(cosine, 0, None), atol=1e-3)
    assert (cosine > 0).any()


def test_git_rsclip_score_matches_transformers_siglip(tmp_path):
    from transformers import AutoProcessor, SiglipModel

    from engine.quality.rank_model import load_rank_model
    from engine.quality.tiny_rank_model import write_tiny_rank_model

    folder = write_tiny_rank_model(tmp_path / "rank", seed=1)
    rank = load_rank_model(str(folder))
    images = random_images(5, rank.image_size, 6)
    ours = clip_scores(rank.embed_images(images), rank.embed_texts(CAPTIONS))

    model = SiglipModel.from_pretrained(folder).eval()
    processor = AutoProcessor.from_pretrained(folder)
    inputs = processor(text=CAPTIONS, images=images, padding="max_length", max_length=64,
                       return_tensors="pt")
    with torch.no_grad():
        out = model(**inputs)
        # SigLIP: logits = cos * exp(logit_scale) + logit_bias
        cosine = ((out.logits_per_image - model.logit_bias) / model.logit_scale.exp()).diagonal()
    np.testing.assert_allclose(ours, 100 * np.clip(cosine.double().numpy(), 0, None), atol=1e-3)
    assert (cosine > 0).any()


def test_an_absent_general_clip_is_a_missing_model(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    with pytest.raises(ModelNotFoundError, match="--clip-model"):
        load_general_clip(None, offline=True)
