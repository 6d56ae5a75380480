"""`text2earth generate` end to end on tiny checkpoints, checked with rasterio, pyproj and QGIS."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from pyproj import CRS, Transformer

from engine.cli import main

PROBE = Path(__file__).with_name("qgis_probe.py")
L0 = 156543.03392804097  # Web Mercator m/px at level 0 on the equator


def run_cli(capsys, *args):
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def generate(capsys, tiny, out, bbox, crs, *extra):
    code, stdout, stderr = run_cli(
        capsys, "generate", "--bbox", ",".join(map(str, bbox)), "--crs", crs,
        "--prompt", "a park", "--model", str(tiny), "--device", "cpu", "--precision", "fp32",
        "--steps", "2",
        "--seed", "5", "--quiet", "--out", str(out), *extra,
    )
    assert code == 0, stderr
    return stdout, stderr


def qgis_view(*paths):
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen")
    result = subprocess.run(
        [sys.executable, str(PROBE), *map(str, paths)],
        capture_output=True, text=True, env=env, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def centre_latitude(bbox, crs):
    crs = CRS.from_user_input(crs)
    to_geo = Transformer.from_crs(crs, crs.geodetic_crs, always_xy=True)
    return to_geo.transform((bbox[0] + bbox[2]) / 2, (bbox[1] + bbox[3]) / 2)[1]


CASES = [
    # (bbox, crs, level, expected QGIS authid)
    ((447000, 5411000, 447300, 5411200), "EPSG:32632", 17, "EPSG:32632"),
    ((8.27, 48.85, 8.274, 48.853), "EPSG:4326", 17, "EPSG:4326"),
    ((920000, 6250000, 920600, 6250400), "EPSG:3857", 16, "EPSG:3857"),
    ((980000, 195000, 981500, 196000), "EPSG:2263", 16, "EPSG:2263"),  # US survey feet
]


def test_outputs_land_where_drawn_as_qgis_sees_them(capsys, tiny_t2i, tmp_path):
    paths = []
    for i, (bbox, crs, level, _) in enumerate(CASES):
        out = tmp_path / f"scene{i}.tif"
        generate(capsys, tiny_t2i, out, bbox, crs, "--level", str(level))
        paths.append(out)
    views = qgis_view(*paths)
    for (bbox, crs, level, authid), view, path in zip(CASES, views, paths, strict=True):
        size = max(bbox[2] - bbox[0], bbox[3] - bbox[1])
        assert view["valid"] and view["bands"] == 3
        assert view["authid"] == authid
        assert view["extent"] == pytest.approx(list(bbox), abs=1e-6 * size)
        # Square on the ground, at the level's ground resolution, as QGIS measures it.
        expected = L0 * math.cos(math.radians(centre_latitude(bbox, crs))) / 2**level
        assert view["ground_x_m"] == pytest.approx(view["ground_y_m"], rel=0.02)
        assert view["ground_x_m"] == pytest.approx(expected, rel=0.03)
        assert "TEXT2EARTH_PROMPT" in view["metadata"]
        with rasterio.open(path) as ds:
            assert CRS.from_wkt(ds.crs.to_wkt()).equals(CRS.from_user_input(crs))
            assert ds.tags()["TEXT2EARTH_LEVEL"] == str(level)
    # In Web Mercator a level-L pixel is exactly L0 / 2**L CRS units (up to the snap to bounds).
    assert views[2]["xres"] == pytest.approx(L0 / 2**16, rel=2e-3)


def test_tags_record_the_request(capsys, tiny_t2i, t2i_model, tmp_path):
    out = tmp_path / "tags.tif"
    generate(capsys, tiny_t2i, out, (447000, 5411000, 447300, 5411300), "EPSG:32632",
             "--level", "17", "--negative-prompt", "haze", "--scheduler", "ddim",
             "--guidance", "3.5")
    with rasterio.open(out) as ds:
        tags = ds.tags()
    assert tags["TEXT2EARTH_PROMPT"] == "a park"
    assert tags["TEXT2EARTH_NEGATIVE_PROMPT"] == "haze"
    assert tags["TEXT2EARTH_SEED"] == "5"
    assert tags["TEXT2EARTH_STEPS"] == "2"
    assert tags["TEXT2EARTH_GUIDANCE"] == "3.5"
    assert tags["TEXT2EARTH_SCHEDULER"] == "ddim"
    # The model by its folder's name (and its weights' hash), never the user's path.
    assert tags["TEXT2EARTH_MODEL_ID"] == tiny_t2i.resolve().name
    assert str(tiny_t2i.parent) not in json.dumps(tags)
    assert tags["TEXT2EARTH_MODEL_SHA256"] == t2i_model.weights_sha256
    assert tags["TEXT2EARTH_SYNTHETIC"] == "yes"
    assert tags["DIGITAL_SOURCE_TYPE"].endswith("trainedAlgorithmicMedia")
    assert float(tags["TEXT2EARTH_GROUND_RESOLUTION_M"]) == pytest.approx(
        L0 * math.cos(math.radians(centre_latitude((447000, 5411000, 447300, 5411300),
                                                   "EPSG:32632"))) / 2**17, rel=1e-5)
    assert "TEXT2EARTH_PIPELINE_CHECK" not in tags


def test_small_extent_is_the_centre_of_a_256_canvas(capsys, tiny_t2i, t2i_model, tmp_path):
    out = tmp_path / "small.tif"
    generate(capsys, tiny_t2i, out, (447000, 5411000, 447030, 5411024), "EPSG:32632",
             "--level", "17")
    with rasterio.open(out) as ds:
        pixels = np.moveaxis(ds.read(), 0, 2)
        assert ds.tags()["TEXT2EARTH_CANVAS"] == "256x256"
    h, w, _ = pixels.shape
    assert (w, h) == (38, 31)  # 30 m x 24 m at ~0.786 m/px
    pipe = t2i_model.pipeline
    pipe.use_scheduler("euler")
    full = pipe("a park", level=17, num_inference_steps=2,
                generator=torch.Generator("cpu").manual_seed(5)).images[0]
    top, left = (256 - h) // 2, (256 - w) // 2
    np.testing.assert_array_equal(pixels, full[top : top + h, left : left + w])


def test_git10m_prefix_sets_the_level(capsys, tiny_t2i, tmp_path):
    out = tmp_path / "prefix.tif"
    code, _, err = run_cli(
        capsys, "generate", "--bbox", "447000,5411000,447300,5411300", "--crs", "EPSG:32632",
        "--prompt", "15_GOOGLE_LEVEL_a quarry", "--model", str(tiny_t2i), "--steps", "1",
        "--quiet", "--out", str(out),
    )
    assert code == 0, err
    with rasterio.open(out) as ds:
        assert ds.tags()["TEXT2EARTH_LEVEL"] == "15"
        assert ds.tags()["TEXT2EARTH_PROMPT"] == "a quarry"


BAD = [
    # (options changed from a good request, None = left out; message expected on stderr)
    ({"--crs": "EPSG:999999"}, "unknown CRS"),
    ({"--level": "25"}, "range"),
    ({"--bbox": "447000,5411000,447000,5411300"}, "zero area"),
    ({"--bbox": "447300,5411000,447000,5411300"}, "inverted"),
    ({"--crs": "EPSG:4326", "--bbox": "170,10,-170,11"}, "antimeridian"),
    ({"--crs": "EPSG:4326", "--bbox": "10,86,11,87"}, "latitude"),
    ({"--bbox": "0,0,900000,9000000"}, "limit"),
    ({"--resolution": "-1", "--level": None}, "positive"),
    ({"--steps": "0"}, "steps"),
    ({"--model": "someone/missing-model", "--offline": ""}, "TEXT2EARTH_MODEL"),
    ({"--prompt": "   "}, "empty"),
    ({"--out": "scene.png"}, ".tif"),
    ({"--bbox": "5411000,447000,5411300,447300"}, "swapped"),  # northing, easting
    # issue 22 item 9: what is wrong with the extent, not only that it is unusable
    ({"--bbox": "447000,5411300,447300,5411000"}, "ymin 5.4113e+06 is greater than ymax"),
    ({"--bbox": "447000,5411000,447000,5411300"}, "width is 0 (xmin = xmax = 447000)"),
    ({"--bbox": "nan,5411000,447300,5411300"}, "xmin is not a number (NaN)"),
    ({"--bbox": "447000,5411000,inf,5411300"}, "xmax is infinite"),
    ({"--crs": "EPSG:4326", "--bbox": "8.3,48.8,8.2,48.9"}, "xmin 8.3 is east of xmax 8.2"),
    ({"--crs": "EPSG:4326", "--bbox": "447000,5411000,447300,5411300"},
     "projected coordinates"),
    # issue 22 item 10: the service's cap and characters, in one short line
    ({"--prompt": "a park " * 15000}, "105000 characters long; at most 4000"),
    ({"--prompt": "a park\x00 at night"}, "U+0000 at position 7"),
    ({"--negative-prompt": "\x1b[2Jblur"}, "--negative-prompt holds the control character"),
]


@pytest.mark.parametrize("changes,message", BAD)
def test_bad_input_one_clear_line_nonzero_exit(capsys, tiny_t2i, tmp_path, changes, message):
    options = {
        "--bbox": "447000,5411000,447300,5411300", "--crs": "EPSG:32632", "--level": "17",
        "--prompt": "x", "--model": str(tiny_t2i), "--out": str(tmp_path / "o.tif"),
        "--steps": "1",
    }
    options.update(changes)
    argv = ["generate", "--quiet"]
    for key, value in options.items():
        if value is not None:
            argv += [key, value] if value else [key]
    code, out, err = run_cli(capsys, *argv)
    assert code != 0
    assert message in err
    assert "Traceback" not in err
    assert err.startswith("text2earth: error:")
    assert len(err.strip().splitlines()) == 1
    if {"--prompt", "--negative-prompt"} & set(changes):
        assert len(err) < 200  # never the prompt (or a file pasted as one) echoed back
    assert not (tmp_path / "o.tif").exists()


def test_existing_output_is_not_overwritten(capsys, tiny_t2i, tmp_path):
    out = tmp_path / "exists.tif"
    out.write_bytes(b"mine")
    code, _, err = run_cli(
        capsys, "generate", "--bbox", "447000,5411000,447300,5411300", "--crs", "EPSG:32632",
        "--prompt", "x", "--model", str(tiny_t2i), "--out", str(out), "--quiet",
    )
    assert code == 2 and "--overwrite" in err
    assert out.read_bytes() == b"mine"


def test_inpainting_checkpoint_is_refused_for_text_to_image(capsys, tiny_inpaint, tmp_path):
    code, _, err = run_cli(
        capsys, "generate", "--bbox", "447000,5411000,447300,5411300", "--crs", "EPSG:32632",
        "--prompt", "x", "--model", str(tiny_inpaint), "--out", str(tmp_path / "i.tif"),
        "--quiet", "--steps", "1", "--level", "16",  # 191 px: one canvas, not a scene
    )
    assert code == 2 and "inpainting" in err


def test_demo_fallback_runs_the_same_job_as_a_pipeline_check(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    out = tmp_path / "scene.tif"
    code, stdout, err = run_cli(
        capsys, "generate", "--bbox", "447000,5411000,447300,5411300", "--crs", "EPSG:32632",
        "--level", "17", "--prompt", "a park", "--model", "someone/not-here", "--offline",
        "--demo-fallback", "--steps", "2", "--seed", "1", "--out", str(out),
    )
    assert code == 0, err
    check = tmp_path / "scene.pipeline-check.tif"
    assert stdout.strip().splitlines()[-1] == str(check)
    assert not out.exists() and check.exists()
    assert "--model" in err and "TEXT2EARTH_MODEL" in err and "not imagery" in err
    assert "Traceback" not in err
    with rasterio.open(check) as ds:
        assert ds.tags()["TEXT2EARTH_PIPELINE_CHECK"].startswith("yes")
        assert ds.bounds == pytest.approx((447000, 5411000, 447300, 5411300))


def test_levels_table(capsys):
    code, out, _ = run_cli(capsys, "levels", "--lat", "60")
    assert code == 0
    rows = [line.split() for line in out.strip().splitlines()[1:]]
    assert [int(r[0]) for r in rows] == list(range(10, 19))
    by_level = {int(r[0]): (float(r[1]), float(r[2])) for r in rows}
    assert by_level[17][0] == 1.0 and by_level[10][0] == 128.0
    assert by_level[17][1] == pytest.approx(L0 * 0.5 / 2**17, rel=1e-3)  # cos 60 = 0.5


def test_console_script_is_installed():
    script = Path(sys.executable).with_name("text2earth")
    result = subprocess.run([str(script), "--version"], capture_output=True, text=True)
    assert result.returncode == 0 and "text2earth" in result.stdout


def test_output_under_a_file_is_refused_before_any_work(capsys, tiny_t2i, tmp_path):
    (tmp_path / "a.tif").write_bytes(b"x")
    code, _, err = run_cli(
        capsys, "generate", "--bbox", "447000,5411000,447300,5411300", "--crs", "EPSG:32632",
        "--prompt", "x", "--model", str(tiny_t2i), "--out", str(tmp_path / "a.tif" / "x.tif"),
        "--quiet",
    )
    assert code == 2 and "is a file, not a folder" in err and "Traceback" not in err
    assert (tmp_path / "a.tif").read_bytes() == b"x"


@pytest.mark.parametrize("argv", [
    ["generate", "--bbox", "1,2,3", "--crs", "EPSG:4326", "--prompt", "x", "--out", "a.tif"],
    ["generate", "--bbox", "1,2,3,4", "--crs", "EPSG:4326", "--prompt", "x", "--out", "a.tif",
     "--level", "17.5"],
    ["generate", "--bbox", "1,2,3,4", "--crs", "EPSG:4326", "--prompt", "x", "--out", "a.tif",
     "--level", "17", "--resolution", "1"],
    ["levels", "--lat", "north"],
])
def test_argument_errors_are_one_line(capsys, argv):
    with pytest.raises(SystemExit) as info:
        main(argv)
    err = capsys.readouterr().err
    assert info.value.code == 2
    assert err.startswith("text2earth: error:") and len(err.strip().splitlines()) == 1


def test_a_region_prompt_from_a_file_follows_the_prompt_rules(tmp_path):
    """Prompt regions read from a GeoJSON file meet the same rule as --prompt: a control
    character (a NUL would cut the tag) is refused with one line, before any model work."""
    from engine.errors import InputError
    from engine.jobs.generate import GenerateRequest, plan

    region = {"geometry": {"type": "Polygon", "coordinates": [[
        [447000, 5411000], [447100, 5411000], [447100, 5411100], [447000, 5411000]]]},
              "prompt": "a lake\x00 with a dam"}
    request = GenerateRequest(bbox=(447000, 5411000, 447300, 5411300), crs="EPSG:32632",
                              prompt="farmland", level=17, out=tmp_path / "x.tif",
                              regions=[region], regions_crs="EPSG:32632")
    with pytest.raises(InputError, match="prompt region 1's prompt"):
        plan(request)
