"""The windowed jobs' scratch store (engine.scenes.store): a kill at any durability point,
then the same command again, gives the pixels of an uninterrupted run; one run per output;
a full disk and a moved folder are the user's errors and leave nothing behind."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import rasterio
from conftest import SHARED_RASTERS, tmpfs

from engine.errors import DiskFullError, InputError
from engine.jobs.generate import GenerateRequest, generate
from engine.scenes import folder as folder_module
from engine.scenes.lock import lock_name
from engine.scenes.state import scene_files

ROOT = Path(__file__).resolve().parents[1]
UTM = "EPSG:32632"
# 120 x 80 m at level 17 (~0.79 m/px): 153 x 102 px, 3 x 2 windows of 64 px, overlap 16.
BBOX = (447000.0, 5411000.0, 447120.0, 5411080.0)
FAST = dict(tile=64, overlap=16, steps=1, level=17, seed=5, prompt="farmland", crs=UTM,
            bbox=BBOX)
# 85 x 45 m: 108 x 57 px, 2 x 1 windows (the second overwrites a strip of the first).
TWO = dict(FAST, bbox=(447000.0, 5411000.0, 447085.0, 5411045.0))


class Killed(BaseException):
    """Stands for a kill: no `except Exception` of the job catches it."""


@pytest.fixture(scope="module")
def inpaint_model(tiny_inpaint):
    from engine.model.checkpoint import load_model

    return load_model(str(tiny_inpaint), "cpu", precision="fp32")


def pixels(path: Path) -> np.ndarray:
    with rasterio.open(path) as ds:
        return ds.read()


def ours(folder: Path) -> list[str]:
    """Our files left in ``folder`` (scratch, state, redo, lock, temp files)."""
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(".t2e-"))


@pytest.fixture
def points(monkeypatch):
    """Durability points of the job run inside: ``points.stop_at = n`` stops it at the n-th
    (before the fsync / rename happens), ``points.seen`` lists them."""

    class Points:
        stop_at: int | None = None
        seen: list[str] = []

        def __call__(self, n: int, what: str) -> None:
            self.seen.append(what)
            if self.stop_at is not None and len(self.seen) == self.stop_at:
                raise Killed(what)

        def reset(self) -> None:
            self.seen, self.stop_at = [], None

    hook = Points()
    hook.seen = []
    monkeypatch.setattr(folder_module, "hook", hook)
    return hook


@pytest.mark.parametrize("method", ["outpaint", "cascade"])
def test_a_kill_at_every_durability_point_then_resume_gives_the_same_pixels(
        tmp_path, method, inpaint_model, t2i_model, points):
    model = inpaint_model if method == "outpaint" else t2i_model
    whole = generate(GenerateRequest(**TWO, scene_method=method, out=tmp_path / "whole.tif"),
                     model)
    expected = pixels(whole.path)
    total = len(points.seen)
    kinds = {what.split()[0] + (" folder" if what.endswith("folder") else "")
             for what in points.seen}
    # Start (state, scratch) and two window groups (redo, scratch, state): 5 + 2 * 7.
    assert total == 19 and kinds == {"fsync", "rename", "fsync folder"}, points.seen
    for n in range(1, total + 1):
        folder = tmp_path / f"kill{n}"
        folder.mkdir()
        request = GenerateRequest(**TWO, scene_method=method, out=folder / "s.tif")
        points.reset()
        points.stop_at = n
        with pytest.raises(Killed):
            generate(request, model)
        points.stop_at = None
        resumed = generate(request, model)
        assert np.array_equal(pixels(resumed.path), expected), f"differs after point {n}"
        assert ours(folder) == [], n  # scratch, state, redo, lock: all gone
        shutil.rmtree(folder)


def test_a_recorded_window_that_does_not_verify_starts_the_scene_over(tmp_path,
                                                                      inpaint_model):
    whole = pixels(generate(GenerateRequest(**FAST, out=tmp_path / "w.tif",
                                            scene_method="outpaint"), inpaint_model).path)
    request = GenerateRequest(**FAST, out=tmp_path / "s.tif", scene_method="outpaint")

    def crash(pipe, step, t, tensors):
        if tensors["tile"] == 5:
            raise Killed()
        return tensors

    with pytest.raises(Killed):
        generate(request, inpaint_model, crash)
    [names] = scene_files(request.out)
    assert len(json.loads(names.state.read_text())["done"]) >= 3
    with rasterio.open(names.scratch, "r+") as ds:  # a torn block of a recorded window
        ds.write(np.full((3, 4, 4), 7, np.uint8), window=rasterio.windows.Window(70, 2, 4, 4))
    tiles = []
    result = generate(request, inpaint_model, lambda p, s, t, x: tiles.append(x["tile"]) or x)
    assert min(tiles) == 1  # not trusted: made again from the first window
    assert np.array_equal(pixels(result.path), whole)


def cli(out: Path, model: Path, inpaint: Path, *extra: str, method: str = "outpaint",
        steps: int = 1, seed: int = 5, bbox=BBOX) -> list[str]:
    return [sys.executable, "-m", "engine.cli", "generate", "--bbox",
            ",".join(map(str, bbox)), "--crs", UTM, "--level", "17", "--prompt", "farmland",
            "--model", str(model), "--inpaint-model", str(inpaint), "--device", "cpu",
            "--precision", "fp32", "--steps", str(steps), "--tile", "64", "--overlap", "16",
            "--seed", str(seed), "--scene-method", method, "--quiet", "--out", str(out),
            *extra]


ENV = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}


def strace_killed(command: list[str], syscall: str, n: int) -> int:
    """``command`` SIGKILLed (with its threads) at the n-th ``syscall`` (of any process it
    starts); its exit status."""
    done = subprocess.run(["strace", "-f", "-qq", "-o", os.devnull, "-e", f"trace={syscall}",
                           "-e", f"inject={syscall}:signal=SIGKILL:when={n}", *command],
                          cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=600)
    return done.returncode


@pytest.mark.skipif(shutil.which("strace") is None, reason="strace is not installed")
def test_a_real_kill_at_fsyncs_and_renames_of_the_cli_then_rerun(tmp_path, tiny_t2i,
                                                                 tiny_inpaint):
    """The real process, killed by the kernel at chosen system calls across the run, then
    the same command. A 2 x 1 window scene: the store's fsyncs are 3 at the start and 5 per
    window group (redo, folder, scratch, state, folder), its renames (renameat: by the
    folder's fd) 1 at the start and 2 per group (redo, state); renameat 3 is the state
    rename right after the first group reached the scratch (the moment the issue found)."""
    bbox = TWO["bbox"]
    whole = tmp_path / "whole.tif"
    subprocess.run(cli(whole, tiny_t2i, tiny_inpaint, bbox=bbox), cwd=ROOT, env=ENV,
                   check=True, capture_output=True)
    expected = pixels(whole)
    for syscall, n in [("renameat", 3), ("fsync", 7), ("renameat", 4), ("fsync", 12)]:
        folder = tmp_path / f"{syscall}{n}"
        folder.mkdir()
        out = folder / "s.tif"
        code = strace_killed(cli(out, tiny_t2i, tiny_inpaint, bbox=bbox), syscall, n)
        assert code != 0 and not out.exists(), (syscall, n, code)
        assert [n for n in scene_files(out) if n.scratch.exists()], "nothing to resume"
        subprocess.run(cli(out, tiny_t2i, tiny_inpaint, bbox=bbox), cwd=ROOT, env=ENV,
                       check=True, capture_output=True)
        assert np.array_equal(pixels(out), expected), (syscall, n)
        assert ours(folder) == [], (syscall, n)


@pytest.mark.skipif(shutil.which("strace") is None, reason="strace is not installed")
def test_a_real_kill_at_every_fsync_rename_and_link_of_an_edit_then_rerun(tmp_path, tiny_inpaint):
    source = SHARED_RASTERS / "RGB.byte.tif"
    if not source.exists():
        pytest.skip(f"{source} is not here")
    raster = tmp_path / "small.tif"  # a 128 px crop: the same edit, a fraction of the time
    crop = rasterio.windows.Window(350, 250, 128, 128)
    with rasterio.open(source) as ds:
        x0, y0 = ds.transform * (400, 300)
        x1, y1 = ds.transform * (430, 330)
        profile = dict(ds.profile, width=128, height=128,
                       transform=ds.window_transform(crop))
        with rasterio.open(raster, "w", **profile) as dst:
            dst.write(ds.read(window=crop))
    wkt = f"POLYGON(({x0} {y0},{x1} {y0},{x1} {y1},{x0} {y1},{x0} {y0}))"

    def edit(out: Path) -> list[str]:
        return [sys.executable, "-m", "engine.cli", "edit", "--raster", str(raster), "--mask",
                wkt, "--mask-crs", "EPSG:32618", "--prompt", "a lake", "--model",
                str(tiny_inpaint), "--steps", "1", "--tile", "64", "--overlap", "16",
                "--seed", "5", "--precision", "fp32", "--device", "cpu", "--quiet", "--out",
                str(out)]

    whole = tmp_path / "whole.tif"
    calls = tmp_path / "calls.txt"  # the uninterrupted run's own fsyncs and renames
    subprocess.run(["strace", "-f", "-qq", "-o", str(calls), "-e",
                    "trace=fsync,rename,renameat,renameat2,link,linkat", *edit(whole)],
                   cwd=ROOT, env=ENV, check=True, capture_output=True)
    expected = pixels(whole)
    seen = [line.split()[1].split("(")[0] for line in calls.read_text().splitlines()
            if "(" in line and "resumed>" not in line]
    points = [(name, k + 1) for name in sorted(set(seen))
              for k in range(seen.count(name))]
    # The output's writer: fsync the file, link it into place (rename with --overwrite),
    # fsync the folder; an edit's scratch stores keep no journal (a rerun starts afresh).
    assert ("fsync", 1) in points and any(name.startswith(("rename", "link"))
                                          for name, _ in points), points
    for syscall, n in points:
        folder = tmp_path / f"{syscall}{n}"
        folder.mkdir()
        out = folder / "e.tif"
        assert strace_killed(edit(out), syscall, n) != 0, (syscall, n)
        if not out.exists():  # killed before the output was placed: the same command again
            subprocess.run(edit(out), cwd=ROOT, env=ENV, check=True, capture_output=True)
            assert ours(folder) == [], (syscall, n)
        else:  # placed (after its fsync) before the kill: whole; what is left is swept
            from engine.jobs.leftovers import stale_files

            assert set(ours(folder)) <= {p.name for p in stale_files(folder)}, (syscall, n)
        assert np.array_equal(pixels(out), expected), (syscall, n)


def test_a_second_run_to_the_same_output_is_refused_at_once(tmp_path, tiny_t2i,
                                                            tiny_inpaint):
    out = tmp_path / "same.tif"
    slow = dict(steps=100, bbox=TWO["bbox"])  # the first still runs when the second starts
    first = subprocess.Popen(cli(out, tiny_t2i, tiny_inpaint, seed=7, **slow), cwd=ROOT,
                             env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    lock = out.with_name(lock_name(out))
    end = time.monotonic() + 240
    while not lock.exists():
        assert first.poll() is None, first.stderr.read().decode()
        assert time.monotonic() < end, "the first run never locked its output"
        time.sleep(0.1)
    started = time.monotonic()
    second = subprocess.run(cli(out, tiny_t2i, tiny_inpaint, seed=8, **slow), cwd=ROOT,
                            env=ENV, capture_output=True, text=True, timeout=600)
    refused_after = time.monotonic() - started
    assert first.poll() is None, "the first run ended before the second was refused"
    assert second.returncode == 2
    lines = second.stderr.strip().splitlines()
    assert len(lines) == 1 and f"another Text2Earth run (pid {first.pid}, running since" \
        in lines[0] and str(out) in lines[0], lines
    assert first.wait(600) == 0, first.stderr.read().decode()
    alone = tmp_path / "alone.tif"
    subprocess.run(cli(alone, tiny_t2i, tiny_inpaint, seed=7, **slow), cwd=ROOT, env=ENV,
                   check=True, capture_output=True)
    assert np.array_equal(pixels(out), pixels(alone))
    with rasterio.open(out) as ds:
        assert ds.tags()["TEXT2EARTH_SEED"] == "7"
    assert ours(tmp_path) == []
    assert refused_after < 60


def test_a_full_disk_under_a_scene_is_disk_full_and_leaves_nothing(tmp_path, inpaint_model):
    with tmpfs(tmp_path / "small", "size=96k") as small:
        with pytest.raises(DiskFullError) as caught:
            generate(GenerateRequest(**FAST, scene_method="outpaint", out=small / "s.tif"),
                     inpaint_model)
        assert caught.value.kind == "disk_full"
        assert os.listdir(small) == []


def test_a_folder_moved_mid_run_is_bad_input_and_its_files_go_at_once(tmp_path,
                                                                      inpaint_model):
    folder = tmp_path / "a"
    folder.mkdir()

    def move(pipe, step, t, tensors):
        if tensors["tile"] == 3 and not (tmp_path / "b").exists():
            folder.rename(tmp_path / "b")
            folder.mkdir()  # and another folder in its place
        return tensors

    with pytest.raises(InputError, match="moved or replaced while the job ran") as caught:
        generate(GenerateRequest(**FAST, scene_method="outpaint", out=folder / "s.tif"),
                 inpaint_model, move)
    assert caught.value.kind == "bad_input"
    assert os.listdir(tmp_path / "b") == [] and os.listdir(folder) == []


def test_leftovers_know_locks_and_redo_files_and_spare_a_live_run(tmp_path):
    from engine.jobs.leftovers import remove_stale, stale_files
    from engine.scenes.folder import OutputFolder
    from engine.scenes.lock import OutputLock

    dead = subprocess.Popen(["true"])
    dead.wait()
    live_out, gone_out = tmp_path / "live.tif", tmp_path / "gone.tif"
    state = {"fingerprint": "x", "seed": 1, "done": [], "resumable": False, "pid": dead.pid}
    for out, tag in ((live_out, "a" * 12), (gone_out, "b" * 12)):
        stem = tmp_path / f".t2e-scene-{tag}"
        stem.with_suffix(".json").write_text(json.dumps({**state, "out": out.name}))
        stem.with_suffix(".tif").write_bytes(b"x")
        stem.with_suffix(".redo").write_bytes(b"x")
    (tmp_path / ".t2e-scene-cccccccccccc.redo").write_bytes(b"x")  # without its state
    gone_lock = tmp_path / lock_name(gone_out)
    gone_lock.write_text("{}")  # left by a kill: nobody holds it
    folder = OutputFolder(tmp_path)
    try:
        with OutputLock(live_out, folder):  # a run (of a pid we cannot see) holds live.tif
            stale = {p.name for p in stale_files(tmp_path, everything=True)}
            assert stale == {gone_lock.name, ".t2e-scene-cccccccccccc.redo"} | {
                f".t2e-scene-{'b' * 12}{s}" for s in (".json", ".tif", ".redo")}
            assert len(remove_stale(tmp_path, everything=True)) == 5
            assert (tmp_path / lock_name(live_out)).exists()
        assert ours(tmp_path) == sorted(f".t2e-scene-{'a' * 12}{s}"
                                        for s in (".json", ".redo", ".tif"))
    finally:
        folder.close()
