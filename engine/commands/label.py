"""`text2earth label --raster X.tif [--labels FILE] [--out grid.gpkg|grid.geojson]`: zero-shot
scene labels per model-sized window (Git-RSCLIP), as a vector grid and a JSON summary."""

from __future__ import annotations

import json
import sys

from engine.commands.score import add_rank_arguments, parse_bands


def add_parser(sub) -> None:
    p = sub.add_parser("label", help="zero-shot scene labels of a raster per window "
                                     "(Git-RSCLIP), as a GeoJSON / GeoPackage grid")
    add_rank_arguments(p)
    p.add_argument("--labels", default=None,
                   help="a text file, one label per line (default: AID's 30 scene classes, "
                        "resources/labels/aid.txt)")
    p.add_argument("--template", default=None,
                   help="the prompt around each label, with {} for it "
                        "(default: 'a remote sensing image of {}.')")
    p.add_argument("--out", default=None,
                   help="grid of windows with their label: .geojson or .gpkg (default: only "
                        "the JSON summary on stdout)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing grid")
    p.set_defaults(handler=run)


def provenance(rank, raster: str, template: str) -> dict[str, str]:
    """What made the grid, by names and hashes: never the user's paths."""
    import hashlib
    from pathlib import Path

    from engine.model.checkpoint import weights_sha256
    from engine.model.provenance import public_model_id

    raster_sha = ""  # a GDAL path (/vsicurl/...) is not a file to hash
    if Path(raster).is_file():
        with open(raster, "rb") as fh:
            raster_sha = hashlib.file_digest(fh, "sha256").hexdigest()
    return {"TEXT2EARTH_RANK_MODEL": public_model_id(rank.checkpoint.model_id),
            "TEXT2EARTH_RANK_MODEL_SHA256": weights_sha256(Path(rank.checkpoint.path)),
            "TEXT2EARTH_TEMPLATE": template, "TEXT2EARTH_RASTER": Path(raster).name,
            "TEXT2EARTH_RASTER_SHA256": raster_sha}


def run(args) -> int:
    from collections import Counter

    from engine.quality.label_grid import check_grid_path, write_label_grid
    from engine.quality.labels import TEMPLATE, check_template, label_raster, read_labels
    from engine.quality.rank_model import load_rank_model
    from engine.quality.raster_rgb import open_rgb

    labels = read_labels(args.labels)
    template = check_template(args.template or TEMPLATE)
    bands = parse_bands(args.bands)
    if args.out:
        check_grid_path(args.out, args.overwrite)  # before the model loads
    with open_rgb(args.raster, bands):
        pass
    rank = load_rank_model(args.rank_model, args.device, args.offline or None)
    windows, info = label_raster(rank, args.raster, labels, bands, template)
    if args.out:
        path = write_label_grid(args.out, windows, info, args.overwrite,
                                provenance(rank, args.raster, template))
        print(f"wrote {path}: {len(windows)} windows of {rank.image_size} px",
              file=sys.stderr)
    counts = Counter(w.label for w in windows)
    print(json.dumps({
        "raster": str(args.raster), "rank_model": rank.checkpoint.model_id,
        "template": template, "labels": len(labels), "window_size": rank.image_size,
        "windows": len(windows), "grid": args.out,
        "label_counts": dict(counts.most_common()),
        "windows_labels": [{"row": w.row, "col": w.col, "label": w.label,
                            "probability": round(w.probability, 6)} for w in windows],
    }, indent=2))
    return 0
