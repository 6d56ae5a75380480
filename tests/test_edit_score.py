"""Edits carry the prompt-fidelity score of what they regenerated (Git-RSCLIP), when a rank
model is at hand; without one, nothing changes."""

from __future__ import annotations

import numpy as np
import pytest
import rank_support
import rasterio
from rank_support import read_rgb, reference_probabilities
from rasterio.transform import from_origin

from engine.jobs.edit import EditRequest, edit_raster
from engine.quality.rank_model import load_rank_model

tiny_rank = rank_support.tiny_rank  # the shared fixture
PROMPT = "a pond in a park"


@pytest.fixture(scope="module")
def inpaint_model(tiny_inpaint):
    from engine.model.checkpoint import load_model

    return load_model(str(tiny_inpaint), "cpu", precision="fp32")


def test_edit_of_the_whole_raster_is_scored_like_its_output(inpaint_model, tiny_rank, tmp_path):
    src = tmp_path / "src.tif"
    rng = np.random.default_rng(2)
    with rasterio.open(src, "w", driver="GTiff", width=96, height=96, count=3, dtype="uint8",
                       crs="EPSG:32632",
                       transform=from_origin(447000, 5411000, 0.75, 0.75)) as dst:
        dst.write(rng.integers(0, 256, (3, 96, 96), np.uint8))
    x0, y0, x1, y1 = 446990, 5410920, 447090, 5411010  # covers the whole raster
    mask = {"type": "Polygon", "coordinates": [[[x0, y0], [x1, y0], [x1, y1], [x0, y1],
                                                [x0, y0]]]}
    common = dict(raster=src, prompt=PROMPT, mask=mask, mask_crs="EPSG:32632", steps=1,
                  tile=64, overlap=16, seed=7)
    scored = edit_raster(EditRequest(out=tmp_path / "scored.tif",
                                     ranker=load_rank_model(str(tiny_rank)), **common),
                         inpaint_model)
    plain = edit_raster(EditRequest(out=tmp_path / "plain.tif", **common), inpaint_model)
    assert np.array_equal(read_rgb(scored.path), read_rgb(plain.path))
    with rasterio.open(plain.path) as ds:
        assert "TEXT2EARTH_RSCLIP_SCORE" not in ds.tags()
    with rasterio.open(scored.path) as ds:
        score = float(ds.tags()["TEXT2EARTH_RSCLIP_SCORE"])
    want = reference_probabilities(tiny_rank, [read_rgb(scored.path)], [PROMPT])[0, 0]
    assert score == pytest.approx(want, abs=1e-3)
