"""Nothing lost, nothing partial: full disks (a real small tmpfs), kill -9 leftovers, names the
file system cannot hold, and Cloud-Optimized GeoTIFF outputs (checked with rio-cogeo).

References are independent of the engine: the kernel's own ENOSPC on a tmpfs of a few KB,
os.pathconf's NAME_MAX / PATH_MAX, rio-cogeo's COG validator, PIL for the raw XMP tag.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import rasterio
import rasterio.shutil
from affine import Affine
from conftest import SHARED_RASTERS, tmpfs
from PIL import Image
from pyproj import CRS
from rasterio.enums import ColorInterp
from rasterio.errors import RasterioIOError
from rio_cogeo.cogeo import cog_validate

from engine.cli import main
from engine.errors import DiskFullError, GenerationCancelled, InputError, WriteError
from engine.geo.geotiff import check_output_path, synthetic_tags, write_geotiff
from engine.jobs.edit import EditRequest, edit_raster
from engine.jobs.generate import GenerateRequest, generate
from engine.jobs.leftovers import resumable_scenes, stale_files
from engine.scenes.lock import lock_name
from engine.scenes.state import scene_files

ROOT = Path(__file__).resolve().parents[1]
UTM = "EPSG:32632"
SMALL_BBOX = (447000.0, 5411000.0, 447100.0, 5411100.0)  # 100 m: one window, ~127 px at L17
SCENE_BBOX = (447000.0, 5411000.0, 447300.0, 5411300.0)  # 382 px: 2 x 2 windows of 256
TRANSFORM = Affine(0.5, 0, 447000.0, 0, -0.5, 5411300.0)


def noise(h: int, w: int, seed: int = 0) -> np.ndarray:
    """Incompressible pixels: the file is as large as the image."""
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def inpaint_model(tiny_inpaint):
    from engine.model.checkpoint import load_model

    return load_model(str(tiny_inpaint), "cpu", precision="fp32")


@pytest.fixture
def small_fs(tmp_path):
    """A tmpfs of 2 MiB; ``fill(kb)`` leaves exactly ``kb`` KiB free on it."""
    with tmpfs(tmp_path / "small-fs", "size=2m") as mount:

        def fill(kb: int) -> Path:
            filler = mount / "filler"
            filler.unlink(missing_ok=True)
            stats = os.statvfs(mount)
            with open(filler, "wb") as fh:
                fh.write(b"\0" * (stats.f_bavail * stats.f_frsize - kb * 1024))
            return mount

        fill.mount = mount
        yield fill


def left_on(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.name != "filler")


# ---------------------------------------------------------------------------------------------
# full disks


@pytest.mark.parametrize("free_kb", [0, 8, 20])
def test_full_disk_on_write_raises_and_leaves_nothing(small_fs, free_kb):
    """Before: 0-16 KB unreadable files at the output name and no error (GDAL only printed
    'TIFFAppendToStrip: Write error' / '_tiffWriteProc: No space left on device')."""
    for h, w in ((100, 120), (256, 256), (382, 382)):
        folder = small_fs(free_kb)
        with pytest.raises(DiskFullError, match="full") as caught:
            write_geotiff(folder / "sub" / "out.tif", noise(h, w), CRS.from_epsg(32632),
                          TRANSFORM, {})
        assert "\n" not in str(caught.value)
        assert left_on(folder) == []  # no output, no temp file, no folder made for it
    # The same write fits once there is room: the test can pass only through the disk.
    folder = small_fs(1500)
    write_geotiff(folder / "out.tif", noise(382, 382), CRS.from_epsg(32632), TRANSFORM, {})
    assert left_on(folder) == ["out.tif"]


def test_other_write_failures_are_write_errors_and_leave_nothing(tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise RasterioIOError("Write failed. See previous exception for details.")

    monkeypatch.setattr(rasterio.shutil, "copy", broken)
    with pytest.raises(WriteError, match="failed") as caught:
        write_geotiff(tmp_path / "new" / "w.tif", noise(64, 64), CRS.from_epsg(32632),
                      TRANSFORM, {})
    assert caught.value.kind == "write_failed" and "\n" not in str(caught.value)
    assert list(tmp_path.iterdir()) == []


def test_full_disk_through_the_cli_is_one_line_and_exit_5(small_fs, capsys, tiny_t2i):
    folder = small_fs(8)
    code = main(["generate", "--bbox", ",".join(map(str, SMALL_BBOX)), "--crs", UTM,
                 "--level", "17", "--prompt", "farmland", "--model", str(tiny_t2i),
                 "--device", "cpu", "--precision", "fp32", "--steps", "1", "--seed", "1",
                 "--quiet", "--out", str(folder / "cli.tif")])
    err = capsys.readouterr().err
    assert code == 5 and err.startswith("text2earth: error: the disk holding")
    assert err.count("\n") == 1 and left_on(folder) == []


def test_full_disk_single_window_generate(small_fs, t2i_model):
    for free_kb in (0, 8, 20):
        folder = small_fs(free_kb)
        request = GenerateRequest(bbox=SMALL_BBOX, crs=UTM, prompt="farmland", level=17,
                                  seed=3, steps=1, out=folder / "one.tif")
        with pytest.raises(DiskFullError):
            generate(request, t2i_model)
        assert left_on(folder) == []


def test_full_disk_scene_discards_its_scratch(small_fs, inpaint_model):
    """The scratch canvas (uncompressed, 448 x 448 px) cannot fit: each window is read back,
    so a write lost while flushing is caught, and the resumable scratch goes too."""
    folder = small_fs(150)
    request = GenerateRequest(bbox=SCENE_BBOX, crs=UTM, prompt="farmland", level=17, seed=3,
                              steps=1, tile=256, overlap=64, out=folder / "scene.tif")
    with pytest.raises(DiskFullError):
        generate(request, inpaint_model)
    assert left_on(folder) == []


def rgb_source(path: Path, cog: bool = False, tiled: bool = False) -> Path:
    """160 x 128 px of RGB.byte.tif (UTM 18N), striped, tiled or as a COG."""
    with rasterio.open(SHARED_RASTERS / "RGB.byte.tif") as src:
        window = rasterio.windows.Window(300, 300, 160, 128)
        profile = dict(src.profile, width=160, height=128, transform=src.window_transform(window))
        profile.pop("blockxsize", None)
        profile.pop("blockysize", None)
        profile.update(tiled=tiled, compress="deflate")
        if tiled:
            profile.update(blockxsize=64, blockysize=64)
        plain = path.with_suffix(".plain.tif") if cog else path
        with rasterio.open(plain, "w", **profile) as dst:
            dst.write(src.read(window=window))
    if cog:
        rasterio.shutil.copy(plain, path, driver="COG", BLOCKSIZE=64, COMPRESS="DEFLATE")
        plain.unlink()
    return path


def centre_box(path: Path, side_px: int = 24) -> dict:
    with rasterio.open(path) as ds:
        x0, y0 = ds.transform * (ds.width / 2 - side_px / 2, ds.height / 2 + side_px / 2)
        x1, y1 = ds.transform * (ds.width / 2 + side_px / 2, ds.height / 2 - side_px / 2)
    return {"type": "Polygon",
            "coordinates": [[[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]]]}


EDIT = dict(steps=1, tile=64, overlap=16, seed=7, prompt="a lake", mask_crs="EPSG:32618")


def test_full_disk_edit(small_fs, tmp_path, inpaint_model):
    source = rgb_source(tmp_path / "src.tif")
    for free_kb in (0, 8, 20):
        folder = small_fs(free_kb)
        with pytest.raises(DiskFullError):
            edit_raster(EditRequest(raster=source, mask=centre_box(source),
                                    out=folder / "edited.tif", **EDIT), inpaint_model)
        assert left_on(folder) == []


def test_failed_edit_removes_the_folders_it_made(tmp_path, inpaint_model):
    """A refused or failed job leaves no folder (here: cancelled at its first step)."""
    source = rgb_source(tmp_path / "src.tif")

    def cancel(*args, **kwargs):
        raise GenerationCancelled("cancelled")

    with pytest.raises(GenerationCancelled):
        edit_raster(EditRequest(raster=source, mask=centre_box(source),
                                out=tmp_path / "new" / "deeper" / "e.tif", **EDIT),
                    inpaint_model, cancel)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src.tif"]


# ---------------------------------------------------------------------------------------------
# leftovers


def dead_pid() -> int:
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


def test_failure_before_the_scene_starts_leaves_no_scratch(tmp_path, inpaint_model,
                                                           monkeypatch):
    """Before: the scratch and state were made before the code that cleans up on failure."""
    import engine.scenes.run as scene

    def boom(*args, **kwargs):
        raise RuntimeError("scratch failed")

    monkeypatch.setattr(scene, "scratch_profile", boom)
    request = GenerateRequest(bbox=SCENE_BBOX, crs=UTM, prompt="farmland", level=17, seed=3,
                              steps=1, tile=256, overlap=64, out=tmp_path / "new" / "s.tif")
    with pytest.raises(RuntimeError, match="scratch failed"):
        generate(request, inpaint_model)
    assert list(tmp_path.iterdir()) == []  # no scratch, no state, no state temp, no folder


def cli_scene(tiny_t2i, tiny_inpaint, out: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "engine.cli", "generate", "--bbox",
         ",".join(map(str, SCENE_BBOX)), "--crs", UTM, "--level", "17", "--prompt", "farmland",
         "--model", str(tiny_t2i), "--inpaint-model", str(tiny_inpaint), "--device", "cpu",
         "--precision", "fp32", "--steps", "400", "--tile", "256", "--overlap", "64",
         "--seed", "3", "--quiet", "--out", str(out), *extra],
        cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"},
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def kill_when(process: subprocess.Popen, out: Path, timeout: float = 240.0):
    """Kill -9 once the scene's scratch is there; its files (engine.scenes.state)."""
    end = time.monotonic() + timeout
    while not [n for n in scene_files(out) if n.scratch.exists()]:
        assert process.poll() is None, process.stderr.read().decode()
        assert time.monotonic() < end, f"the scratch of {out} never appeared"
        time.sleep(0.2)
    time.sleep(0.5)
    process.send_signal(signal.SIGKILL)
    process.wait(30)
    [names] = scene_files(out)
    return names.scratch, names.state


def test_kill_9_leftovers_are_listed_resumed_or_swept(tmp_path, capsys, tiny_t2i, tiny_inpaint,
                                                      t2i_model):
    """A real kill -9 of the CLI mid-scene: the resumable scratch is kept with its state and
    listed; `clean` removes it. A killed non-resumable scene, and temp files of dead
    processes, are removed by the next CLI run in that folder; live or foreign files stay."""
    out = tmp_path / "kept.tif"
    scratch, state = kill_when(cli_scene(tiny_t2i, tiny_inpaint, out), out)
    assert scratch.exists() and state.exists() and not out.exists()
    assert main(["resume", "--list", str(tmp_path)]) == 0
    listed = capsys.readouterr().out
    assert str(out) in listed and "windows done" in listed
    assert [s.out for s in resumable_scenes(tmp_path)] == [out]
    assert main(["clean", str(tmp_path)]) == 0
    capsys.readouterr()
    assert list(tmp_path.iterdir()) == []

    gone = tmp_path / "gone.tif"
    scratch, state = kill_when(cli_scene(tiny_t2i, tiny_inpaint, gone, "--no-resume"), gone)
    assert json.loads(state.read_text())["resumable"] is False
    dead, live = dead_pid(), os.getpid()
    planted = {
        f".t2e-{dead}-0a1b2c3d.cog.tif": False,  # a killed job's temp: removed
        f".t2e-{dead}-0a1b2c3d.edit-scratch-0.tif": False,
        f".t2e-{live}-0a1b2c3d.part.tif": True,  # a live process's: kept
        ".notes.tif.tmp": True,  # not our naming: kept
        "mine.tif": True,
    }
    for name in planted:
        (tmp_path / name).write_bytes(b"x")
    stale = {p.name for p in stale_files(tmp_path)}
    lock = lock_name(gone)  # the killed run's lock file, no longer held
    assert stale == {scratch.name, state.name, lock} | {n for n, keep in planted.items()
                                                        if not keep}
    assert main(["generate", "--bbox", ",".join(map(str, SMALL_BBOX)), "--crs", UTM,
                 "--level", "17", "--prompt", "farmland", "--model", str(tiny_t2i),
                 "--device", "cpu", "--precision", "fp32", "--steps", "1", "--seed", "1",
                 "--out", str(tmp_path / "next.tif")]) == 0
    assert "removed 5 stale temp file(s)" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [n for n, keep in planted.items() if keep] + ["next.tif"])


# ---------------------------------------------------------------------------------------------
# names the file system cannot hold


def test_names_the_file_system_cannot_hold_are_refused_up_front(tmp_path):
    name_max = os.pathconf(tmp_path, "PC_NAME_MAX")
    with pytest.raises(InputError, match=f"at most {name_max}") as caught:
        check_output_path(tmp_path / ("n" * (name_max + 1 - 4) + ".tif"))
    assert "\n" not in str(caught.value) and len(str(caught.value)) < 200
    with pytest.raises(InputError, match="at most"):
        check_output_path(tmp_path / "d" / ("y" * 260) / "z.tif")
    deep = "a/" * 2000 + "x.tif"  # before: 'maximum recursion depth exceeded' in mkdir
    with pytest.raises(InputError, match="bytes long"):
        write_geotiff(tmp_path / deep, noise(8, 8), CRS.from_epsg(32632), TRANSFORM, {})
    assert list(tmp_path.iterdir()) == []  # no folder made for a refused job


def test_longest_names_the_file_system_holds_are_written(tmp_path):
    """Before: 234-255 character names were accepted and then failed (the temp name was
    longer); now temp names are short, so a name NAME_MAX allows is written."""
    name_max = os.pathconf(tmp_path, "PC_NAME_MAX")
    out = tmp_path / ("n" * (name_max - 4) + ".tif")
    write_geotiff(out, noise(16, 16), CRS.from_epsg(32632), TRANSFORM, {})
    deep = tmp_path / ("a/" * 1200 + "x.tif")  # 1200 new folders, made without recursion
    try:
        write_geotiff(deep, noise(16, 16), CRS.from_epsg(32632), TRANSFORM, {})
        assert deep.is_file() and out.is_file()
        assert sorted(p.name for p in tmp_path.iterdir()) == sorted([out.name, "a"])
    finally:  # innermost first: shutil.rmtree (pytest's clean-up) recurses per level
        deep.unlink(missing_ok=True)
        folder = deep.parent
        while folder != tmp_path and folder.is_dir():
            folder.rmdir()
            folder = folder.parent


def test_long_names_through_the_cli_are_one_line_errors(tmp_path, capsys):
    for out in (tmp_path / ("n" * 300 + ".tif"), tmp_path / "d" / ("y" * 260) / "z.tif"):
        code = main(["generate", "--bbox", ",".join(map(str, SMALL_BBOX)), "--crs", UTM,
                     "--level", "17", "--prompt", "x", "--out", str(out)])
        err = capsys.readouterr().err
        assert code == 2 and err.count("\n") == 1 and "at most" in err, err
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------------------------------------
# Cloud-Optimized GeoTIFF


def assert_cog(path: Path) -> None:
    valid, errors, _ = cog_validate(str(path), strict=False)
    assert valid and errors == [], errors


def assert_labelled(path: Path) -> None:
    with rasterio.open(path) as ds:
        tags = ds.tags()
        assert tags["TEXT2EARTH_SYNTHETIC"] == "yes"
        assert "SYNTHETIC" in tags["TIFFTAG_IMAGEDESCRIPTION"]
        assert ds.colorinterp == (ColorInterp.red, ColorInterp.green, ColorInterp.blue)
        assert all(shape == (256, 256) for shape in ds.block_shapes)
        assert CRS.from_wkt(ds.crs.to_wkt()).equals(CRS.from_epsg(32632))
    with Image.open(path) as im:
        xmp = im.tag_v2.get(700)  # the XMP packet, read without GDAL
    xmp = xmp.decode() if isinstance(xmp, bytes) else xmp
    assert "digitalsourcetype/trainedAlgorithmicMedia" in xmp


@pytest.mark.parametrize("h,w", [(100, 120), (300, 400), (700, 900)])
def test_written_images_are_valid_cogs_with_their_labels(tmp_path, h, w):
    """Before: small outputs were striped, larger ones had their main IFD after the
    overviews' data (not a COG for rio-cogeo or GDAL)."""
    path = write_geotiff(tmp_path / "c.tif", noise(h, w), CRS.from_epsg(32632), TRANSFORM,
                         synthetic_tags({"seed": 3}))
    assert_cog(path)
    assert_labelled(path)
    with rasterio.open(path) as ds:
        assert ds.tags()["TEXT2EARTH_SEED"] == "3"
        np.testing.assert_array_equal(np.moveaxis(ds.read(), 0, 2), noise(h, w))
        assert (len(ds.overviews(1)) > 0) == (max(h, w) > 256)


def test_generated_image_and_scene_are_cogs(tmp_path, t2i_model, inpaint_model):
    one = generate(GenerateRequest(bbox=SMALL_BBOX, crs=UTM, prompt="farmland", level=17,
                                   seed=3, steps=1, out=tmp_path / "one.tif"), t2i_model)
    scene = generate(GenerateRequest(bbox=SCENE_BBOX, crs=UTM, prompt="farmland", level=17,
                                     seed=3, steps=1, tile=256, overlap=64,
                                     out=tmp_path / "scene.tif"), inpaint_model)
    for result in (one, scene):
        assert_cog(result.path)
        assert_labelled(result.path)
    with rasterio.open(scene.path) as ds:
        assert ds.overviews(1) == [2] and ds.tags()["TEXT2EARTH_SCENE_METHOD"] == "outpaint"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["one.tif", "scene.tif"]


def test_edits_keep_the_source_layout_or_stay_a_cog(tmp_path, inpaint_model):
    cog = rgb_source(tmp_path / "cog.tif", cog=True)
    striped = rgb_source(tmp_path / "striped.tif")
    assert_cog(cog)
    for source, name in ((cog, "from-cog.tif"), (striped, "from-striped.tif")):
        edit_raster(EditRequest(raster=source, mask=centre_box(source), out=tmp_path / name,
                                **EDIT), inpaint_model)
    assert_cog(tmp_path / "from-cog.tif")
    with rasterio.open(tmp_path / "from-striped.tif") as ds, rasterio.open(striped) as src:
        assert not ds.profile.get("tiled") and ds.block_shapes == src.block_shapes
        assert ds.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") != "COG"
    with rasterio.open(tmp_path / "from-cog.tif") as ds, rasterio.open(cog) as src:
        assert ds.colorinterp == src.colorinterp and ds.crs == src.crs
        assert ds.transform == src.transform
        assert ds.tags()["TEXT2EARTH_SYNTHETIC"].startswith("partly")


# ---------------------------------------------------------------------------------------------
# through the service


def test_service_full_disk_long_names_and_start_up_sweep(small_fs, tiny_t2i):
    """One service on a small tmpfs: stale temp files of a killed earlier service go at start;
    a job on a full disk fails (disk_full) and `/file` serves nothing; names too long for the
    file system are a 422 (before: a 500 for 256+ characters, a failed job for 234-255)."""
    import urllib.error
    import urllib.request

    from text2earth_qgis.core.service.client import ServiceError, start_local_service

    folder = small_fs(1500)
    stale = folder / "sub" / f".t2e-{dead_pid()}-0a1b2c3d.cog.tif"
    stale.parent.mkdir()
    stale.write_bytes(b"x")
    svc = start_local_service(python=sys.executable, output_dirs=[str(folder)],
                              model=str(tiny_t2i), device="cpu", timeout=120,
                              env={"PYTHONPATH": str(ROOT)})
    try:
        assert not stale.exists()
        assert svc.client.health()["resumable_scenes"] == []
        body = {"bbox": list(SMALL_BBOX), "crs": UTM, "prompt": "a park", "level": 17,
                "steps": 1, "seed": 7}
        name_max = os.pathconf(folder, "PC_NAME_MAX")
        for out in ("n" * 300 + ".tif", "n" * (name_max - 3) + ".tif",
                    "d/" + "y" * 260 + "/z.tif"):
            with pytest.raises(ServiceError) as refused:
                svc.client.submit({**body, "out": out})
            assert refused.value.status == 422 and "at most" in str(refused.value)
        small_fs(8)
        job = svc.client.submit({**body, "out": "full.tif"})
        end = time.monotonic() + 120
        while (status := svc.client.status(job["id"]))["state"] not in ("done", "failed"):
            assert time.monotonic() < end
            time.sleep(0.2)
        assert status["state"] == "failed" and "full" in status["error"], status
        if "error_kind" in status:  # the service's field (issue 13, service part)
            assert status["error_kind"] == "disk_full"
        with pytest.raises(urllib.error.HTTPError) as no_file:
            urllib.request.urlopen(f"{svc.url}/jobs/{job['id']}/file", timeout=30)
        assert no_file.value.code == 409
        assert left_on(folder) == ["sub"]
        small_fs(1500)
        longest = "n" * (name_max - 4) + ".tif"
        job = svc.client.submit({**body, "out": longest})
        end = time.monotonic() + 120
        while (status := svc.client.status(job["id"]))["state"] not in ("done", "failed"):
            assert time.monotonic() < end
            time.sleep(0.2)
        assert status["state"] == "done", status
        assert_cog(folder / longest)
    finally:
        svc.stop()
