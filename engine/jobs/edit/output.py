"""The edited or extended raster written out: the source's profile, colours, tags,
overviews and mask band (a COG when the source is one), atomically and verified."""

from __future__ import annotations

from pathlib import Path

from rasterio.enums import MaskFlags
from rasterio.windows import Window

from engine import __version__
from engine.geo.geotiff import (
    COMPOSITE_SOURCE_TYPE,
    DESCRIPTION,
    DIGITAL_SOURCE_TYPE,
    TAG_PREFIX,
    build_overviews,
    cog_options,
    is_cog,
    label_synthetic,
    write_atomic,
)
from engine.geo.raster_source import (
    output_compression,
)
from engine.geo.windows import clip, is_empty, relative
from engine.jobs.edit.request import COPY_ROWS, EDIT_DESCRIPTION, RasterJob, RasterPlan
from engine.jobs.edit.source_pixels import source_mask, source_rows


def has_mask_band(src) -> bool:
    """A mask band of its own (GDAL's internal or .msk mask), not nodata or alpha."""
    return all(flags == [MaskFlags.per_dataset] for flags in src.mask_flag_enums)


def _output_profile(src, plan: RasterPlan) -> tuple[dict, str | None]:
    profile = {k: v for k, v in src.profile.items() if k not in ("compress", "photometric")}
    compress, why = output_compression(plan.info)
    if compress:
        profile["compress"] = compress
    predictor = src.tags(ns="IMAGE_STRUCTURE").get("PREDICTOR")
    if predictor and compress in ("deflate", "lzw", "zstd", "lzma"):
        profile["predictor"] = int(predictor)
    elif compress == "deflate" and why:
        profile["predictor"] = 2
    profile.update(driver="GTiff", width=plan.grid.width, height=plan.grid.height,
                   transform=plan.transform, BIGTIFF="IF_SAFER")
    if not profile.get("tiled"):
        profile.pop("blockxsize", None)  # strips: GDAL picks their height
        profile.pop("blockysize", None)
    return profile, why


def kept_source_tags(tags: dict[str, str]) -> dict[str, str]:
    """The source's own metadata; an earlier Text2Earth run's keys would describe another
    job, so they are dropped (the new ones replace them)."""
    return {k: v for k, v in tags.items()
            if not k.startswith(TAG_PREFIX) and k != "DIGITAL_SOURCE_TYPE"}


def write_output(request: RasterJob, src, plan: RasterPlan, areas: list, out: Path,
                  tags: dict[str, str]) -> Path:
    """``areas``: (window, store, written) of each regenerated scratch area."""
    profile, why = _output_profile(src, plan)
    if why:
        plan.notes.append(why)
        tags["TEXT2EARTH_NOTES"] = " | ".join(plan.notes)
    masked = has_mask_band(src)

    def write(dst) -> None:
        width, height = plan.grid.width, plan.grid.height
        for r in range(0, height, COPY_ROWS):
            n = min(COPY_ROWS, height - r)
            band = Window(0, r, width, n)
            block = source_rows(src, plan, band)
            # the source's mask, opened where pixels were made
            mask = source_mask(src, plan, band) if masked else None
            for area, store, written in areas:
                part = clip(area, band)
                if is_empty(part):
                    continue
                at, rows = relative(part, band).toslices(), relative(part, area)
                block[(slice(None), *at)] = store.read(window=rows)
                if mask is not None:
                    mask[at][written.read(1, window=rows) > 0] = 255
            dst.write(block, window=Window(0, r, width, n))
            if mask is not None:
                dst.write_mask(mask, window=Window(0, r, width, n))
        dst.colorinterp = src.colorinterp
        for b in range(1, src.count + 1):
            if src.descriptions[b - 1]:
                dst.set_band_description(b, src.descriptions[b - 1])
            if src.units[b - 1]:
                dst.set_band_unit(b, src.units[b - 1])
            dst.update_tags(b, **src.tags(b))
        dst.scales, dst.offsets = src.scales, src.offsets
        dst.update_tags(**kept_source_tags(src.tags()))
        synthetic = src.tags().get("TEXT2EARTH_SYNTHETIC") == "yes"
        if synthetic:  # editing a generated image leaves it wholly synthetic
            tags.update(TEXT2EARTH_SYNTHETIC="yes", DIGITAL_SOURCE_TYPE=DIGITAL_SOURCE_TYPE)
        label_synthetic(dst, tags, f"Text2Earth engine {__version__}",
                        DESCRIPTION if synthetic else EDIT_DESCRIPTION,
                        DIGITAL_SOURCE_TYPE if synthetic else COMPOSITE_SOURCE_TYPE)
        factors = src.overviews(1)
        if factors and cog is None:  # a COG gets its overviews from the COG driver
            build_overviews(dst, factors)

    # The source's layout is kept; a COG source gives a COG (its layout cannot be written
    # in place: the COG driver copies a finished file) with the source's tile size, and
    # overviews only where the source had them.
    cog = None
    if is_cog(src):
        cog = cog_options(profile.get("compress"), profile.get("predictor"))
        cog["BLOCKSIZE"] = src.block_shapes[0][1]
        if not src.overviews(1):
            cog["OVERVIEWS"] = "NONE"
    return write_atomic(out, profile, write, request.overwrite, request.allowed_dirs, cog=cog)
