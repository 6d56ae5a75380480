"""The batch's STAC collection (pystac): one Item per output COG, its bbox / geometry in
WGS 84, the ``proj:`` extension fields of the file's own grid, and what made it (prompt,
level, seed, model, precision) with the synthetic marks, all read back from the written file,
never from what was asked. Failed items are listed in the collection (``text2earth:failures``).

Written self-contained (relative links) beside the COGs; a file whose content did not change
is not rewritten, so a rerun that skips every item leaves the folder as it was.
"""

from __future__ import annotations

import json
import math
from datetime import datetime, timezone
from pathlib import Path

from engine.batch.json_out import write_json_text
from engine.batch.tasks import ITEM_TAG, TaskResult

COLLECTION_ID = "text2earth-batch"
EDGE_POINTS = 21  # per side: a footprint follows the curved edges of a projected grid
SYNTHETIC_URI = "http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia"
# Each band described twice, as readers differ: STAC 1.1's ``bands`` (name, data type: odc-stac
# takes the dtype from there; without them it loads band 1 alone as float32) and the eo
# extension's ``eo:bands`` (the common names odc-stac and pystac name the variables after).
EO_SCHEMA = "https://stac-extensions.github.io/eo/v1.1.0/schema.json"
COMMON_NAMES = {"red", "green", "blue"}
# The outputs' terms follow the model that made them ("other" with a license link, STAC 1.1).
MODEL_CARD = "https://huggingface.co/lcybuaa/Text2Earth"


def footprint(crs, transform, width: int, height: int) -> list[tuple[float, float]]:
    """The raster's outline in lon/lat (WGS 84), densified, closed, counter-clockwise."""
    from pyproj import CRS, Transformer

    to_wgs84 = Transformer.from_crs(CRS.from_user_input(crs.to_wkt()), "EPSG:4326",
                                    always_xy=True)
    n = EDGE_POINTS - 1
    ring = ([(width * i / n, height) for i in range(n)] + [(width, height - height * i / n)
            for i in range(n)] + [(width - width * i / n, 0) for i in range(n)]
            + [(0, height * i / n) for i in range(n)])
    xs, ys = zip(*[transform * (c, r) for c, r in ring], strict=True)
    lons, lats = to_wgs84.transform(xs, ys)
    points = list(zip(lons, lats, strict=True))
    return points + points[:1]


def ground_sample_distance(crs, transform, width: int, height: int) -> float:
    """The centre pixel's ground size in metres (STAC's ``gsd``), whatever the CRS's units:
    geodesic lengths of its sides on the WGS 84 ellipsoid, their geometric mean (a Mercator or
    UTM pixel is square on the ground; a lon/lat one is not)."""
    from pyproj import CRS, Geod, Transformer

    to_wgs84 = Transformer.from_crs(CRS.from_user_input(crs.to_wkt()), "EPSG:4326",
                                    always_xy=True)
    col, row = width / 2, height / 2
    corners = [transform * (col, row), transform * (col + 1, row), transform * (col, row + 1)]
    lons, lats = to_wgs84.transform(*zip(*corners, strict=True))
    geod = Geod(ellps="WGS84")
    across = geod.inv(lons[0], lats[0], lons[1], lats[1])[2]
    down = geod.inv(lons[0], lats[0], lons[2], lats[2])[2]
    return round(math.sqrt(across * down), 6)


def describe_bands(src) -> list[dict]:
    """One STAC 1.1 band object per band of the open raster (name, data type, nodata)."""
    bands = []
    for index, (dtype, interp) in enumerate(zip(src.dtypes, src.colorinterp, strict=True)):
        name = interp.name if interp.name in COMMON_NAMES else f"b{index + 1}"
        band = {"name": name, "data_type": dtype}
        if src.nodata is not None:
            band["nodata"] = src.nodata
        bands.append(band)
    return bands


def _datetime(value: str | None) -> datetime:
    try:
        return datetime.strptime(value or "", "%Y:%m:%d %H:%M:%S").replace(tzinfo=timezone.utc)
    except ValueError:
        return datetime(1970, 1, 1, tzinfo=timezone.utc)


def stac_item(path: Path):
    """The STAC Item of one written output (everything read from the file)."""
    import pystac
    import rasterio
    from pystac.extensions.projection import ProjectionExtension

    from engine.model.provenance import public_model_id

    with rasterio.open(path) as src:
        tags = src.tags()
        crs, transform, width, height = src.crs, src.transform, src.width, src.height
        bounds = src.bounds
        bands = describe_bands(src)
    ring = footprint(crs, transform, width, height)
    lons, lats = [p[0] for p in ring], [p[1] for p in ring]
    properties = {
        "title": f"Synthetic image: {tags.get('TEXT2EARTH_PROMPT', '')}",
        "text2earth:synthetic": True,
        "text2earth:digital_source_type": SYNTHETIC_URI,
        "text2earth:prompt": tags.get("TEXT2EARTH_PROMPT"),
        "text2earth:negative_prompt": tags.get("TEXT2EARTH_NEGATIVE_PROMPT") or None,
        "text2earth:level": int(tags["TEXT2EARTH_LEVEL"]) if "TEXT2EARTH_LEVEL" in tags else None,
        "text2earth:seed": int(tags["TEXT2EARTH_SEED"]) if "TEXT2EARTH_SEED" in tags else None,
        "text2earth:model": public_model_id(tags["TEXT2EARTH_MODEL_ID"])
        if "TEXT2EARTH_MODEL_ID" in tags else None,
        "text2earth:model_sha256": tags.get("TEXT2EARTH_MODEL_SHA256"),
        "text2earth:precision": tags.get("TEXT2EARTH_PRECISION"),
        "text2earth:steps": int(tags["TEXT2EARTH_STEPS"]) if "TEXT2EARTH_STEPS" in tags else None,
        "text2earth:ground_resolution_m": float(tags.get("TEXT2EARTH_GROUND_RESOLUTION_M", 0))
        or None,
        "text2earth:batch_item": tags.get(ITEM_TAG),
        "gsd": ground_sample_distance(crs, transform, width, height),
    }
    item = pystac.Item(
        id=path.stem,
        geometry={"type": "Polygon", "coordinates": [[list(p) for p in ring]]},
        bbox=[min(lons), min(lats), max(lons), max(lats)],
        datetime=_datetime(tags.get("TIFFTAG_DATETIME")),
        properties={k: v for k, v in properties.items() if v is not None},
    )
    proj = ProjectionExtension.ext(item, add_if_missing=True)
    epsg = crs.to_epsg()
    proj.code = f"EPSG:{epsg}" if epsg else None
    proj.wkt2 = None if epsg else crs.to_wkt()
    proj.bbox = [bounds.left, bounds.bottom, bounds.right, bounds.top]
    proj.shape = [height, width]
    proj.transform = list(transform)[:6]
    item.add_asset("image", pystac.Asset(
        # Absolute here, made relative on writing: a relative href is left as it is, and
        # 'out/x.tif' from a relative --out-dir would be read from the item's own folder.
        href=str(Path(path).resolve()), media_type=pystac.MediaType.COG, roles=["data"],
        title="synthetic RGB (Text2Earth)", extra_fields={
            "bands": bands, "eo:bands": [
                {"name": b["name"], **({"common_name": b["name"]}
                                       if b["name"] in COMMON_NAMES else {})}
                for b in bands]}))
    item.stac_extensions.append(EO_SCHEMA)
    return item


def _summaries(items) -> dict:
    """What a client filters on before opening any item (stac-check asks for summaries)."""
    gsds = [i.properties["gsd"] for i in items]
    levels = sorted({i.properties["text2earth:level"] for i in items
                     if "text2earth:level" in i.properties})
    codes = sorted({i.properties["proj:code"] for i in items if i.properties.get("proj:code")})
    bands = items[0].assets["image"].extra_fields["bands"] if items else []
    summaries = {"gsd": {"minimum": min(gsds), "maximum": max(gsds)} if gsds else None,
                 "proj:code": codes or None, "text2earth:level": levels or None,
                 "bands": bands or None, "text2earth:synthetic": [True]}
    return {k: v for k, v in summaries.items() if v is not None}


def build_collection(outputs: list[Path], failures: list[TaskResult]):
    import pystac

    items = [stac_item(p) for p in sorted(outputs)]
    if items:
        boxes = [i.bbox for i in items]
        bbox = [min(b[0] for b in boxes), min(b[1] for b in boxes),
                max(b[2] for b in boxes), max(b[3] for b in boxes)]
        times = sorted(i.datetime for i in items)
        interval = [times[0], times[-1]]
    else:
        bbox, interval = [-180.0, -90.0, 180.0, 90.0], [None, None]
    collection = pystac.Collection(
        id=COLLECTION_ID,
        title="Text2Earth batch (synthetic images)",
        description="Synthetic remote-sensing images generated by Text2Earth (trained "
                    "algorithmic media, not observations).",
        extent=pystac.Extent(pystac.SpatialExtent([bbox]), pystac.TemporalExtent([interval])),
        license="other",
        summaries=pystac.Summaries(_summaries(items)),
        extra_fields={"text2earth:synthetic": True, "text2earth:failures": [
            {"id": f.key, "item": f.item_id, "error": f.error, "kind": f.kind}
            for f in sorted(failures, key=lambda f: f.key)]},
    )
    collection.add_link(pystac.Link(
        "license", MODEL_CARD, media_type="text/html",
        title="The terms of the Text2Earth model that made these images (its model card)"))
    collection.add_items(items)
    return collection


def _titled(data: dict, titles: dict[str, str]) -> dict:
    """Every link gets a title (stac-check); the collection keeps a relative ``self`` link, so
    the folder still reads the same after it is moved."""
    for link in data.get("links", []):
        title = Path(link["href"]).stem if link["rel"] == "item" else titles.get(link["rel"])
        link.setdefault("title", title or link["rel"])
    return data


def write_collection(out_dir: Path, outputs: list[Path], failures: list[TaskResult]) -> Path:
    """collection.json and ``<id>/<id>.json`` in ``out_dir``, hrefs relative (self-contained,
    as pystac saves it); a file whose content is unchanged is left as it is. Each file is
    written whole or not at all (a full disk: DiskFullError, nothing left behind)."""
    import pystac

    out_dir = Path(out_dir).resolve()
    collection = build_collection(outputs, failures)
    collection.catalog_type = pystac.CatalogType.SELF_CONTAINED
    collection.normalize_hrefs(str(out_dir))
    collection.make_all_asset_hrefs_relative()
    titles = {"root": collection.title, "parent": collection.title,
              "collection": collection.title}
    for obj in [*collection.get_items(), collection]:
        path = Path(obj.get_self_href())
        data = obj.to_dict(include_self_link=False, transform_hrefs=True)
        if obj is collection:
            data["links"].insert(0, {"rel": "self", "href": f"./{path.name}",
                                     "type": "application/json"})
        text = json.dumps(_titled(data, titles), indent=2)
        if path.is_file() and path.read_text(encoding="utf-8") == text:
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        write_json_text(path, text)
    return out_dir / "collection.json"
