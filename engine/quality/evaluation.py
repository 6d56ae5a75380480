"""`text2earth eval`: generate (or read) images for a captions file, then FID and KID against a
reference folder, CLIP scores with Git-RSCLIP and a general CLIP, a per-level breakdown, and a
JSON report with two PNGs beside it (score distributions, a sample grid).

Every check runs before any model work (captions, folders, output names, the FID weights, the
scorers), so a bad input costs nothing and leaves nothing.
"""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from engine import __version__
from engine.errors import InputError, ModelNotFoundError, WriteError
from engine.quality import fid as fid_metrics
from engine.quality.anchor import published_anchor
from engine.quality.captions import Caption, read_captions
from engine.quality.clip_scores import GENERAL_CLIP, clip_scores, load_general_clip
from engine.quality.image_sets import list_images, read_rgb
from text2earth_qgis.core.contract.files import place_file

REPORT_VERSION = 1
EVAL_SIZE = 256  # Txt2Img-MHN's protocol, and Text2Earth's training size
NO_LEVEL = "none"


@dataclass
class EvalRequest:
    captions: Path
    reference: Path
    out: Path
    generated: Path | None = None  # read these instead of generating
    model: str | None = None  # Text2Earth weights for generation (hub id or folder)
    steps: int = 50
    guidance: float = 4.0
    seed: int = 0
    scheduler: str | None = None
    negative_prompt: str | None = None
    precision: str | None = None
    device: str = "auto"
    level: int | None = None  # for captions without a level prefix
    split: str = "test"  # for RSICD-style caption files
    size: int = EVAL_SIZE
    fid_weights: str | None = None
    rank_model: str | None = None  # None: $TEXT2EARTH_RANK_MODEL or Git-RSCLIP, if present
    clip_model: str | None = None  # None: openai/clip-vit-large-patch14, if present
    batch_size: int = 16
    samples: int = 16
    overwrite: bool = False
    notes: list[str] = field(default_factory=list)


def companion_paths(out: Path) -> dict[str, Path]:
    return {"report": out, "plot": out.with_suffix(".scores.png"),
            "samples": out.with_suffix(".samples.png")}


def _check_outputs(request: EvalRequest) -> dict[str, Path]:
    if request.out.suffix.lower() != ".json":
        raise InputError(f"--out {request.out} must end in .json (the report)")
    if not request.out.parent.is_dir():
        raise InputError(f"the folder of --out, {request.out.parent}, does not exist")
    paths = companion_paths(request.out)
    if not request.overwrite:
        taken = [str(p) for p in paths.values() if p.exists()]
        if taken:
            raise InputError(f"{taken[0]} exists: choose another --out or pass --overwrite")
    return paths


def _check_numbers(request: EvalRequest) -> None:
    if request.size < 64 or request.size % 8:
        raise InputError(f"--size must be a multiple of 8 of at least 64, got {request.size}")
    if request.batch_size < 1:
        raise InputError(f"--batch-size must be at least 1, got {request.batch_size}")
    if not 1 <= request.steps <= 1000:
        raise InputError(f"--steps must be in 1..1000, got {request.steps}")
    if not np.isfinite(request.guidance) or request.guidance < 0:
        raise InputError(f"--guidance must be a number >= 0, got {request.guidance}")


def _scorer(kind: str, loader: Callable, name: str | None, default: str, device: str,
            notes: list[str]):
    """A scorer, or None with a note when it was not asked for by name and is absent."""
    try:
        return loader(name, device) if name else loader(None, device, offline=True)
    except ModelNotFoundError as exc:
        if name:
            raise
        notes.append(f"{kind} score skipped: {default} is not on this machine ({exc})")
        return None


def _load_rank_model(name, device, offline=None):
    from engine.quality.rank_model import load_rank_model

    return load_rank_model(name, device=device, offline=offline)


def _rank_default() -> str:
    from engine.quality.rank_model import rank_model_spec

    return rank_model_spec(None)


def _rank_asked(request: EvalRequest) -> str | None:
    """--rank-model or $TEXT2EARTH_RANK_MODEL: named, so it must be there (not skipped)."""
    from engine.quality.rank_model import RANK_MODEL_ENV

    return request.rank_model or os.environ.get(RANK_MODEL_ENV) or None


def _load_clip(name, device, offline=None):
    return load_general_clip(name, device=device, offline=offline)


def _mean_std(values) -> dict | None:
    values = np.asarray(list(values), dtype=float)
    if not len(values):
        return None
    return {"mean": float(values.mean()), "std": float(values.std()), "n": int(len(values))}


def _set_metrics(real: torch.Tensor, fake: torch.Tensor) -> dict:
    if len(real) < 2 or len(fake) < 2:
        return {"fid": None, "kid": None,
                "why": "FID and KID need at least 2 images on each side"}
    return {"fid": fid_metrics.fid(real, fake), "kid": fid_metrics.kid(real, fake),
            "n_generated": len(fake), "n_reference": len(real)}


def _write_atomic(path: Path, write: Callable[[Path], None]) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp{path.suffix}")
    try:
        write(tmp)
        place_file(tmp, path, overwrite=True)
    except OSError as exc:
        raise WriteError(f"could not write {path}: {exc}") from None
    finally:
        tmp.unlink(missing_ok=True)


def _generate(request: EvalRequest, captions: list[Caption], folder: Path,
              say: Callable[[str], None]) -> tuple[dict[str, Path], dict]:
    from dataclasses import asdict

    from engine.model.checkpoint import load_model, resolve_checkpoint, weights_sha256
    from engine.model.device import select_device
    from engine.model.precision import device_facts, resolve_precision
    from engine.model.schedulers import DEFAULT_SCHEDULER
    from engine.quality.eval_generate import GenerationSettings, check_folder, generate_images

    # The folder's settings are checked before the weights are loaded.
    checkpoint = resolve_checkpoint(request.model)
    precision = resolve_precision(request.precision,
                                  device_facts(select_device(request.device)[0]))
    scheduler = request.scheduler or DEFAULT_SCHEDULER
    settings = GenerationSettings(
        model=checkpoint.model_id, weights_sha256=weights_sha256(checkpoint.path),
        size=request.size, steps=request.steps, guidance=request.guidance, seed=request.seed,
        scheduler=scheduler, precision=precision, negative_prompt=request.negative_prompt)
    check_folder(folder, settings, request.overwrite)
    loaded = load_model(request.model, request.device, checkpoint=checkpoint,
                        precision=precision)
    if request.scheduler:
        loaded.pipeline.use_scheduler(scheduler)
    say(f"generating {len(captions)} images into {folder}")
    paths = generate_images(loaded.pipeline, captions, folder, settings, request.overwrite,
                            progress=lambda done, total: say(f"generated {done}/{total}"))
    return paths, {**asdict(settings), "folder": str(folder)}


@dataclass
class Measured:
    """One image set through the feature extractor and the scorers."""

    ids: list[str]
    features: torch.Tensor  # (N, D) float64, rows in ids' order
    scores: dict[str, dict[str, float]]  # scorer -> id -> CLIP score (scored ids only)
    samples: list  # the first few (image, id), for the grid

    def rows(self, ids: list[str]) -> torch.Tensor:
        index = {i: n for n, i in enumerate(self.ids)}
        return self.features[[index[i] for i in ids]]


def _measure(paths: dict[str, Path], by_id: dict[str, Caption], extractor, scorers: dict,
             request: EvalRequest, device: str, keep: int = 0,
             say: Callable[[str], None] = lambda line: None) -> Measured:
    """Features of every image; CLIP scores of those whose id names a caption."""
    ids = list(paths)
    features, scores, samples = [], {key: {} for key in scorers}, []
    for start in range(0, len(ids), request.batch_size):
        batch = ids[start:start + request.batch_size]
        images = [read_rgb(paths[i], request.size) for i in batch]
        features.append(fid_metrics.extract(extractor, images, device))
        captioned = [(image, i) for image, i in zip(images, batch, strict=True) if i in by_id]
        for key, scorer in scorers.items():
            if scorer is not None and captioned:
                values = clip_scores(scorer.embed_images([image for image, _ in captioned]),
                                     scorer.embed_texts([by_id[i].text for _, i in captioned]))
                scores[key].update(zip([i for _, i in captioned], values.tolist(), strict=True))
        samples.extend(captioned[:max(0, keep - len(samples))])
        say(f"measured {start + len(batch)}/{len(ids)} images")
    return Measured(ids, torch.cat(features), scores, samples)


def _per_level(captions: list[Caption], fake: Measured, real: Measured) -> dict | None:
    levels: dict[str, list[str]] = {}
    for c in captions:
        levels.setdefault(str(c.level) if c.level else NO_LEVEL, []).append(c.id)
    if list(levels) == [NO_LEVEL]:
        return None
    per_level = {}
    real_ids = set(real.ids)
    for level, members in sorted(levels.items()):
        matched = [i for i in members if i in real_ids]
        entry = {"n_captions": len(members), "n_reference_matched": len(matched)}
        for key, values in fake.scores.items():
            entry[key] = _mean_std(values[i] for i in members if i in values)
        if len(matched) >= 2 and len(members) >= 2:
            entry.update(_set_metrics(real.rows(matched), fake.rows(members)))
        else:
            entry.update(fid=None, kid=None,
                         why="per-level FID/KID need at least 2 reference images whose names "
                             "match this level's caption ids")
        per_level[level] = entry
    return per_level


def _plan(request: EvalRequest) -> tuple[list[Caption], dict[str, Path], dict[str, Path] | None,
                                         dict[str, Path]]:
    """Every check on the inputs and outputs, before anything is loaded."""
    _check_numbers(request)
    captions = read_captions(request.captions, request.level, request.split)
    reference = list_images(request.reference, "reference")
    if len(reference) < 2:
        raise InputError(f"the reference folder {request.reference} needs at least 2 images")
    outputs = _check_outputs(request)
    generated = None
    if request.generated is not None:
        found = list_images(request.generated, "generated")
        missing = [c.id for c in captions if c.id not in found]
        if missing:
            raise InputError(f"{request.generated} has no image for {len(missing)} caption(s), "
                             f"e.g. {', '.join(missing[:3])} (images are named <id>.png/.jpg)")
        generated = {c.id: found[c.id] for c in captions}
    return captions, reference, generated, outputs


def evaluate(request: EvalRequest, feature_extractor: torch.nn.Module | None = None,
             say: Callable[[str], None] | None = None) -> dict:
    """Run the evaluation and write the report and its PNGs; returns the report.

    ``feature_extractor``: any module mapping uint8 (N, 3, H, W) to (N, D) features, instead of
    the standard FID Inception-v3 (e.g. one fine-tuned on a scene dataset)."""
    from engine.model.device import select_device

    say = say or (lambda line: None)
    started = time.perf_counter()
    captions, reference, generated, outputs = _plan(request)
    device = str(select_device(request.device)[0])
    extractor = feature_extractor or fid_metrics.standard_feature_extractor(
        request.fid_weights, device)
    scorers = {
        "git_rsclip": _scorer("Git-RSCLIP", _load_rank_model, _rank_asked(request),
                              _rank_default(), device, request.notes),
        "general_clip": _scorer("general CLIP", _load_clip, request.clip_model, GENERAL_CLIP,
                                device, request.notes),
    }
    generation = None
    if generated is None:
        folder = request.out.parent / f"{request.out.stem}_images"
        generated, generation = _generate(request, captions, folder, say)
    gen_seconds = time.perf_counter() - started

    by_id = {c.id: c for c in captions}
    fake = _measure(generated, by_id, extractor, scorers, request, device, request.samples, say)
    real = _measure(reference, by_id, extractor, scorers, request, device, 0, say)
    say("computing FID and KID")
    overall = _set_metrics(real.features, fake.features)

    notes = list(request.notes)
    smallest = min(len(real.ids), len(fake.ids))
    dims = fake.features.shape[1]
    if smallest < max(2048, dims):
        notes.append(f"FID from {smallest} images per side is biased upwards (a {dims}-d "
                     "covariance needs more samples); compare FIDs only at equal image counts. "
                     "KID is unbiased and steadier at this size.")
    names = {"git_rsclip": request.rank_model or _rank_default(),
             "general_clip": request.clip_model or GENERAL_CLIP}
    report = {
        "version": REPORT_VERSION,
        "engine": f"Text2Earth engine {__version__}",
        "captions": {"file": str(request.captions), "n": len(captions),
                     "levels": dict(sorted(Counter(str(c.level or NO_LEVEL)
                                                   for c in captions).items()))},
        "reference": {"folder": str(request.reference), "n": len(reference),
                      "matched_to_captions": sum(i in by_id for i in reference)},
        "generated": {"folder": str(next(iter(generated.values())).parent),
                      "made_here": generation},
        "image_size": request.size,
        "features": fid_metrics.describe(extractor),
        "fid": overall["fid"],
        "kid": overall["kid"],
        "clip_score": {
            "definition": "100 * max(cos(image embedding, text embedding), 0) per image; "
                          "mean over images; the caption's text without its level prefix",
            **{key: ({"model": names[key], **_mean_std(fake.scores[key].values())}
                     if scorers[key] is not None else None) for key in scorers},
            "reference_images": {key: _mean_std(values.values())
                                 for key, values in real.scores.items() if values} or None,
        },
        "levels": _per_level(captions, fake, real),
        "images": [{"id": c.id, "level": c.level, "caption": c.text,
                    "seed": request.seed + n if generation else None,
                    **{key: fake.scores[key].get(c.id) for key in scorers}}
                   for n, c in enumerate(captions)],
        "anchor": published_anchor(),
        "notes": notes,
        "seconds": {"generation": round(gen_seconds, 2),
                    "metrics": round(time.perf_counter() - started - gen_seconds, 2),
                    "total": round(time.perf_counter() - started, 2)},
        "files": {k: str(v) for k, v in outputs.items()},
    }
    _write_outputs(report, outputs, fake.scores, real.scores, fake.samples)
    return report


def _write_outputs(report: dict, paths: dict[str, Path], scores: dict, ref_scores: dict,
                   samples: list) -> None:
    from engine.quality.report_plot import sample_grid, score_histograms

    series = {}
    for key, label in (("git_rsclip", "Git-RSCLIP score, generated"),
                       ("general_clip", "general CLIP score, generated")):
        if scores[key]:
            series[label] = np.array(list(scores[key].values()))
        if ref_scores[key]:
            series[label.replace("generated", "reference")] = np.array(
                list(ref_scores[key].values()))
    rsclip = scores["git_rsclip"]
    level = {im["id"]: im["level"] for im in report["images"]}
    labelled = [(image, " ".join([i] + ([f"L{level[i]}"] if level[i] else [])
                                 + ([f"RS {rsclip[i]:.1f}"] if i in rsclip else [])))
                for image, i in samples]
    _write_atomic(paths["plot"], lambda tmp: score_histograms(series).save(tmp, format="PNG"))
    _write_atomic(paths["samples"], lambda tmp: sample_grid(labelled).save(tmp, format="PNG"))
    _write_atomic(paths["report"], lambda tmp: tmp.write_text(
        json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8"))
