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
from text2earth_qgis.core.files import place_file

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


def _load_clip(name, device, offline=None):
    return load_general_clip(name, device=device, offline=offline)


def _batches(ids: list[str], size: int):
    for start in range(0, len(ids), size):
        yield ids[start:start + size]


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


def evaluate(request: EvalRequest, feature_extractor: torch.nn.Module | None = None,
             say: Callable[[str], None] | None = None) -> dict:
    """Run the evaluation and write the report and its PNGs; returns the report."""
    say = say or (lambda line: None)
    from engine.model.device import select_device

    started = time.perf_counter()
    _check_numbers(request)
    captions = read_captions(request.captions, request.level, request.split)
    reference = list_images(request.reference, "reference")
    if len(reference) < 2:
        raise InputError(f"the reference folder {request.reference} needs at least 2 images")
    paths = _check_outputs(request)
    generated: dict[str, Path] | None = None
    if request.generated is not None:
        found = list_images(request.generated, "generated")
        missing = [c.id for c in captions if c.id not in found]
        if missing:
            raise InputError(f"{request.generated} has no image for {len(missing)} caption(s), "
                             f"e.g. {', '.join(missing[:3])} (images are named <id>.png/.jpg)")
        generated = {c.id: found[c.id] for c in captions}
    device = str(select_device(request.device)[0])
    extractor = feature_extractor or fid_metrics.standard_feature_extractor(
        request.fid_weights, device)
    rank = _scorer("Git-RSCLIP", _load_rank_model, request.rank_model, _rank_default(), device,
                   request.notes)
    general = _scorer("general CLIP", _load_clip, request.clip_model, GENERAL_CLIP, device,
                      request.notes)

    generation = None
    gen_started = time.perf_counter()
    if generated is None:
        folder = request.out.parent / f"{request.out.stem}_images"
        generated, generation = _generate(request, captions, folder, say)
    gen_seconds = time.perf_counter() - gen_started

    metric_started = time.perf_counter()
    by_id = {c.id: c for c in captions}
    ids = [c.id for c in captions]
    fake_features, scores = [], {"git_rsclip": {}, "general_clip": {}}
    samples = []
    for batch in _batches(ids, request.batch_size):
        images = [read_rgb(generated[i], request.size) for i in batch]
        fake_features.append(fid_metrics.extract(extractor, images, device))
        texts = [by_id[i].text for i in batch]
        for key, scorer in (("git_rsclip", rank), ("general_clip", general)):
            if scorer is not None:
                values = clip_scores(scorer.embed_images(images), scorer.embed_texts(texts))
                scores[key].update(zip(batch, values.tolist(), strict=True))
        samples.extend((image, i) for image, i in zip(images, batch, strict=True))
        del samples[request.samples:]
        say(f"scored {min(len(ids), ids.index(batch[-1]) + 1)}/{len(ids)} generated images")
    fake = torch.cat(fake_features)
    fake_index = {i: n for n, i in enumerate(ids)}

    ref_ids = list(reference)
    real_features, ref_scores = [], {"git_rsclip": {}, "general_clip": {}}
    for batch in _batches(ref_ids, request.batch_size):
        images = [read_rgb(reference[i], request.size) for i in batch]
        real_features.append(fid_metrics.extract(extractor, images, device))
        matched = [(image, i) for image, i in zip(images, batch, strict=True)
                   if i in by_id]
        for key, scorer in (("git_rsclip", rank), ("general_clip", general)):
            if scorer is not None and matched:
                values = clip_scores(scorer.embed_images([m[0] for m in matched]),
                                     scorer.embed_texts([by_id[m[1]].text for m in matched]))
                ref_scores[key].update(zip([m[1] for m in matched], values.tolist(),
                                           strict=True))
    real = torch.cat(real_features)
    real_index = {i: n for n, i in enumerate(ref_ids)}
    say("computing FID and KID")

    overall = _set_metrics(real, fake)
    levels: dict[str, list[str]] = {}
    for c in captions:
        levels.setdefault(str(c.level) if c.level else NO_LEVEL, []).append(c.id)
    per_level = {}
    if len(levels) > 1 or NO_LEVEL not in levels:
        for level, members in sorted(levels.items()):
            matched = [i for i in members if i in real_index]
            entry = {"n_captions": len(members), "n_reference_matched": len(matched)}
            for key in scores:
                entry[key] = _mean_std(scores[key][i] for i in members if i in scores[key])
            if len(matched) >= 2 and len(members) >= 2:
                entry.update(_set_metrics(real[[real_index[i] for i in matched]],
                                          fake[[fake_index[i] for i in members]]))
            else:
                entry.update(fid=None, kid=None,
                             why="per-level FID/KID need at least 2 reference images whose "
                                 "names match this level's caption ids")
            per_level[level] = entry

    notes = list(request.notes)
    smallest = min(len(real), len(fake))
    if smallest < 2048:
        notes.append(f"FID from {smallest} images per side is biased upwards (the 2048-d "
                     "covariance needs more samples); compare FIDs only at equal image counts. "
                     "KID is unbiased and steadier at this size.")
    report = {
        "version": REPORT_VERSION,
        "engine": f"Text2Earth engine {__version__}",
        "captions": {"file": str(request.captions), "n": len(captions),
                     "levels": {k: len(v) for k, v in sorted(levels.items())}},
        "reference": {"folder": str(request.reference), "n": len(reference),
                      "matched_to_captions": sum(i in by_id for i in reference)},
        "generated": {"folder": str(Path(next(iter(generated.values()))).parent),
                      "made_here": generation},
        "image_size": request.size,
        "features": fid_metrics.describe(extractor),
        "fid": overall["fid"],
        "kid": overall["kid"],
        "clip_score": {
            "definition": "100 * max(cos(image embedding, text embedding), 0) per image; "
                          "mean over images; the caption's text without its level prefix",
            "git_rsclip": ({"model": _rank_default() if not request.rank_model
                            else request.rank_model, **_mean_std(scores["git_rsclip"].values())}
                           if rank is not None else None),
            "general_clip": ({"model": general.name, **_mean_std(scores["general_clip"].values())}
                             if general is not None else None),
            "reference_images": {k: _mean_std(v.values()) for k, v in ref_scores.items()
                                 if v} or None,
        },
        "levels": per_level or None,
        "images": [{"id": c.id, "level": c.level, "caption": c.text,
                    "seed": request.seed + n if generation else None,
                    "git_rsclip": scores["git_rsclip"].get(c.id),
                    "general_clip": scores["general_clip"].get(c.id)}
                   for n, c in enumerate(captions)],
        "anchor": published_anchor(),
        "notes": notes,
        "seconds": {"generation": round(gen_seconds, 2),
                    "metrics": round(time.perf_counter() - metric_started, 2),
                    "total": round(time.perf_counter() - started, 2)},
        "files": {k: str(v) for k, v in paths.items()},
    }
    _write_outputs(report, paths, scores, ref_scores, samples)
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
