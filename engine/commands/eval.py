"""`text2earth eval --captions CAPTIONS --reference DIR [--generated DIR] --out report.json`:
FID / KID / CLIP scores of Text2Earth on a captions file (engine.quality.evaluation)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from text2earth_qgis.core.contract import samplers, scale


def add_parser(sub) -> None:
    p = sub.add_parser(
        "eval", help="measure generated images: FID, KID, CLIP scores (Git-RSCLIP, CLIP)",
        description="Generate an image per caption (or read them with --generated), then FID and "
                    "KID against --reference, CLIP scores, and a per-level breakdown for captions "
                    "with a '<L>_GOOGLE_LEVEL_' prefix. Writes the JSON report and, beside it, "
                    "<out>.scores.png and <out>.samples.png; generated images go to "
                    "<out stem>_images/.")
    p.add_argument("--captions", type=Path, required=True,
                   help="captions: .txt (one per line), .csv (id, caption[, level]), .json "
                        "(list, or RSICD's dataset_rsicd.json)")
    p.add_argument("--reference", type=Path, required=True, help="folder of real images")
    p.add_argument("--generated", type=Path, default=None,
                   help="folder of images already generated, named <caption id>.png")
    p.add_argument("--out", type=Path, required=True, help="the report, a .json file")
    p.add_argument("--level", type=int, choices=scale.LEVELS, metavar="L", default=None,
                   help="level for captions without a prefix (default: none, the model's "
                        "'unknown')")
    p.add_argument("--split", default="test", help="split of an RSICD-style file (default test)")
    p.add_argument("--size", type=int, default=256, help="evaluation size in px (default 256)")
    p.add_argument("--model", default=None, help="Text2Earth weights for generation")
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--guidance", type=float, default=4.0)
    p.add_argument("--seed", type=int, default=0, help="seed of the first caption (+1 each)")
    p.add_argument("--scheduler", choices=samplers.SCHEDULERS, default=samplers.DEFAULT_SCHEDULER)
    p.add_argument("--negative-prompt", default=None)
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16", "fp16"])
    p.add_argument("--fid-weights", default=None,
                   help="the Inception-v3 FID weights file (default: $TEXT2EARTH_FID_WEIGHTS, "
                        "else torch hub's cache, where torchmetrics keeps them)")
    p.add_argument("--rank-model", default=None,
                   help="Git-RSCLIP hub id or folder (default: $TEXT2EARTH_RANK_MODEL, else "
                        "lcybuaa/Git-RSCLIP when present; skipped with a note when absent)")
    p.add_argument("--clip-model", default=None,
                   help="a general CLIP (default openai/clip-vit-large-patch14 when present)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--samples", type=int, default=16, help="images in the sample grid")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing report and regenerate the images")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from engine.quality.evaluation import EvalRequest, evaluate

    request = EvalRequest(
        captions=args.captions, reference=args.reference, out=args.out,
        generated=args.generated, model=args.model, steps=args.steps, guidance=args.guidance,
        seed=args.seed, scheduler=args.scheduler, negative_prompt=args.negative_prompt,
        precision=None if args.precision == "auto" else args.precision, device=args.device,
        level=args.level, split=args.split, size=args.size, fid_weights=args.fid_weights,
        rank_model=args.rank_model, clip_model=args.clip_model, batch_size=args.batch_size,
        samples=args.samples, overwrite=args.overwrite)
    report = evaluate(request, say=None if args.quiet else
                      (lambda line: print(line, file=sys.stderr)))
    summary = {k: report[k] for k in ("fid", "kid")}
    summary["clip_score"] = {k: (v or {}).get("mean") for k, v in report["clip_score"].items()
                             if k in ("git_rsclip", "general_clip")}
    summary["files"] = report["files"]
    print(json.dumps(summary, indent=2))
    return 0
