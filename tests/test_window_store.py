"""The windowed jobs' scratch store (engine.scenes.store): a kill at any durability point,
then the same command again, gives the pixels of an uninterrupted run; one run per output;
a full disk and a moved folder are the user's errors and leave nothing behind.

Every durability point is swept in-process (engine.scenes.folder.hook, the models loaded
once); the real processes are killed by the kernel (strace) at the moment that matters
most, between a window group's scratch write and its state save, once per kind of call."""

from __future__ import annotations

import json
import os
import re
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
from engine.scenes.store import decode_redo

ROOT = Path(__file__).resolve().parents[1]
UTM = "EPSG:32632"
# 120 x 80 m at level 17 (~0.79 m/px): 153 x 102 px, 3 x 2 windows of 64 px, overlap 16.
BBOX = (447000.0, 5411000.0, 447120.0, 5411080.0)
FAST = dict(tile=64, overlap=16, steps=1, level=17, seed=5, prompt="farmland", crs=UTM,
            bbox=BBOX)
# 85 x 45 m: 108 x 57 px, 2 x 1 windows (the second overwrites a strip of the first): the
# smallest scene of two window groups; 64 px is the smallest window.
TWO = dict(FAST, bbox=(447000.0, 5411000.0, 447085.0, 5411045.0))
SCRATCH = re.compile(r"^\.t2e-scene-[0-9a-f]{12}\.tif$")
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
needs_strace = pytest.mark.skipif(shutil.which("strace") is None,
                                  reason="strace is not installed")


class Killed(BaseException):
    """Stands for a kill: no `except Exception` of the job catches it."""


def pixels(path: Path) -> np.ndarray:
    with rasterio.open(path) as ds:
        return ds.read()


def ours(folder: Path) -> list[str]:
    """Our files left in ``folder`` (scratch, state, redo, lock, temp files)."""
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(".t2e-"))


def kind(what: str) -> str:
    """A durability point without its run's names: "rename .t2e-scene-TAG.json"."""
    what = re.sub(r"\.t2e-scene-[0-9a-f]{12}", ".t2e-scene-TAG", what)
    return re.sub(r"\.t2e-\d+-[0-9a-z_]{8}", ".t2e-TEMP", what)


def model_for(method: str, t2i_model, inpaint_model):
    return inpaint_model if method == "outpaint" else t2i_model


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, t2i_model, inpaint_model):
    """``uninterrupted(method)``: the pixels of an uninterrupted in-process run of the TWO
    scene and the durability points it passed (what each was about to do), made once."""
    made: dict[str, tuple[np.ndarray, list[str]]] = {}

    def run(method: str) -> tuple[np.ndarray, list[str]]:
        if method not in made:
            seen: list[str] = []
            before = folder_module.hook
            folder_module.hook = lambda n, what: seen.append(what)
            try:
                out = tmp_path_factory.mktemp("whole") / "whole.tif"
                result = generate(GenerateRequest(**TWO, scene_method=method, out=out),
                                  model_for(method, t2i_model, inpaint_model))
            finally:
                folder_module.hook = before
            made[method] = pixels(result.path), seen
        return made[method]

    return run


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
        tmp_path, method, t2i_model, inpaint_model, uninterrupted, points):
    expected, seen = uninterrupted(method)
    kinds = {what.split()[0] + (" folder" if what.endswith("folder") else "") for what in seen}
    # Start (state, scratch) and two window groups (redo, scratch, state): 5 + 2 * 7.
    assert len(seen) == 19 and kinds == {"fsync", "rename", "fsync folder"}, seen
    model = model_for(method, t2i_model, inpaint_model)
    for n in range(1, len(seen) + 1):
        folder = tmp_path / f"kill{n}"
        folder.mkdir()
        request = GenerateRequest(**TWO, scene_method=method, out=folder / "s.tif")
        points.reset()
        points.stop_at = n
        with pytest.raises(Killed):
            generate(request, model)
        assert list(map(kind, points.seen)) == list(map(kind, seen[:n])), n
        points.stop_at = None
        resumed = generate(request, model)
        assert np.array_equal(pixels(resumed.path), expected), f"differs after {seen[n - 1]}"
        assert ours(folder) == [], n  # scratch, state, redo, lock: all gone
        shutil.rmtree(folder)


def test_a_recorded_window_that_does_not_verify_starts_the_scene_over(tmp_path,
                                                                      inpaint_model,
                                                                      uninterrupted):
    whole, _ = uninterrupted("outpaint")
    request = GenerateRequest(**TWO, out=tmp_path / "s.tif", scene_method="outpaint")

    def crash(pipe, step, t, tensors):
        if tensors["tile"] == 2:
            raise Killed()
        return tensors

    with pytest.raises(Killed):
        generate(request, inpaint_model, crash)
    [names] = scene_files(request.out)
    assert json.loads(names.state.read_text())["done"] != []
    with rasterio.open(names.scratch, "r+") as ds:  # a torn block of the recorded window
        ds.write(np.full((3, 4, 4), 7, np.uint8), window=rasterio.windows.Window(2, 2, 4, 4))
    tiles = []
    result = generate(request, inpaint_model, lambda p, s, t, x: tiles.append(x["tile"]) or x)
    assert min(tiles) == 1  # not trusted: made again from the first window
    assert np.array_equal(pixels(result.path), whole)


def cli(out: Path, model: Path, inpaint: Path, *extra: str, method: str = "outpaint",
        seed: int = 5, bbox=TWO["bbox"]) -> list[str]:
    return [sys.executable, "-m", "engine.cli", "generate", "--bbox",
            ",".join(map(str, bbox)), "--crs", UTM, "--level", "17", "--prompt", "farmland",
            "--model", str(model), "--inpaint-model", str(inpaint), "--device", "cpu",
            "--precision", "fp32", "--steps", "1", "--tile", "64", "--overlap", "16",
            "--seed", str(seed), "--scene-method", method, "--quiet", "--out", str(out),
            *extra]


def start(command: list[str]) -> subprocess.Popen:
    return subprocess.Popen(command, cwd=ROOT, env=ENV, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)


def ends(processes: list[subprocess.Popen]) -> list[tuple[int, str]]:
    """Processes started together (each mostly imports, on a core of its own): exit
    statuses and stderr."""
    done = []
    for process in processes:
        _, err = process.communicate(timeout=300)
        done.append((process.returncode, err))
    return done


class Uninterrupted:
    """A CLI run's output, started beside the runs it is compared with, read once."""

    def __init__(self, command: list[str], out: Path) -> None:
        self.command, self.out = command, out
        self.process: subprocess.Popen | None = None
        self.made: np.ndarray | None = None

    def start(self) -> None:
        if self.process is None:
            self.process = start(self.command)

    def pixels(self) -> np.ndarray:
        if self.made is None:
            self.start()
            [(code, err)] = ends([self.process])
            assert code == 0, err
            self.made = pixels(self.out)
        return self.made


@pytest.fixture(scope="module")
def cli_whole(tmp_path_factory, tiny_t2i, tiny_inpaint) -> Uninterrupted:
    """The CLI's uninterrupted outpainting of the TWO scene, seed 5."""
    out = tmp_path_factory.mktemp("cli") / "whole.tif"
    return Uninterrupted(cli(out, tiny_t2i, tiny_inpaint), out)


RENAMES = "rename,renameat,renameat2"
PLACES = RENAMES + ",link,linkat"


def strace_killed(command: list[str], syscalls: str, n: int) -> list[str]:
    """``command`` under strace, SIGKILLed (with its threads) on entering its n-th call of
    ``syscalls`` (comma separated), before the call happens."""
    # (Not --seccomp-bpf: strace 6.1 then delivers no injected signal.)
    return ["strace", "-f", "-qq", "-o", os.devnull, "-e", f"trace={syscalls}",
            "-e", f"inject={syscalls}:signal=SIGKILL:when={n}", *command]


def group_moment(seen: list[str]) -> dict[str, tuple[str, int]] | None:
    """The last window group's moment between its scratch write and its state save, from
    the durability points of an in-process run (the real process makes the same fsyncs and
    renames in the same order, and none before them): the fsync of its scratch (after its
    redo was renamed into place) and the rename of the state that records it, as the n-th
    fsync and the n-th rename of the run. None without a journal (no redo file)."""
    redos = [i for i, w in enumerate(seen) if w.startswith("rename") and w.endswith(".redo")]
    if not redos:
        return None
    redo = redos[-1]  # its context overlaps the windows before it: made again, it differs
    scratch = next(i for i in range(redo, len(seen)) if seen[i].startswith("fsync ")
                   and SCRATCH.match(seen[i].split()[1]))
    state = next(i for i in range(scratch, len(seen)) if seen[i].startswith("rename")
                 and seen[i].endswith(".json"))
    return {"fsync": ("fsync", sum(w.startswith("fsync") for w in seen[: scratch + 1])),
            "rename": (RENAMES, sum(w.startswith("rename") for w in seen[: state + 1]))}


def assert_killed_between_scratch_and_state(out: Path, at_rename: bool) -> None:
    """Left by a kill at the last group's moment: its redo whole, the scratch holding it,
    the state not yet recording it (and with the rename kill, the new state written beside
    it, only not renamed into place)."""
    [names] = scene_files(out)
    state = json.loads(names.state.read_text())
    writes = decode_redo(names.redo.read_bytes())
    keys = sorted(key for key, _, _ in writes)
    assert writes and not set(keys) & set(state["done"]), state
    with rasterio.open(names.scratch) as ds:
        for _, window, data in writes:
            assert np.array_equal(ds.read(window=window), data)
    pending = [json.loads(p.read_text())["done"] for p in out.parent.glob(".t2e-*.state.json")]
    assert pending == ([sorted(state["done"] + keys)] if at_rename else []), pending


def kill_then_rerun(command, kills: dict[str, tuple[str, int]], outs: dict[str, Path],
                    whole: Uninterrupted, journal: bool) -> None:
    """Each kill in its own folder, the uninterrupted run beside them; then the same
    command in each: the uninterrupted pixels, and nothing of ours left."""
    whole.start()
    killed = ends([start(strace_killed(command(outs[k]), *kills[k])) for k in kills])
    for kind, (code, err) in zip(kills, killed, strict=True):
        assert code != 0 and not outs[kind].exists(), (kind, code, err)
        if journal:
            assert_killed_between_scratch_and_state(outs[kind], kind == "rename")
    again = ends([start(command(outs[k])) for k in kills])
    for kind, (code, err) in zip(kills, again, strict=True):
        assert code == 0, (kind, err)
        assert np.array_equal(pixels(outs[kind]), whole.pixels()), kind
        assert ours(outs[kind].parent) == [], kind


def folders(tmp_path: Path, name: str) -> dict[str, Path]:
    outs = {kind: tmp_path / kind / name for kind in ("fsync", "rename")}
    for out in outs.values():
        out.parent.mkdir()
    return outs


@needs_strace
def test_a_real_kill_between_a_window_s_scratch_write_and_its_state_save_then_rerun(
        tmp_path, tiny_t2i, tiny_inpaint, cli_whole, uninterrupted):
    """The real process, killed by the kernel at the fsync of the last group's scratch and
    at the rename of the state that records it (the moment the issue found resumes wrong:
    the group's context now holds its own pixels), then the same command."""
    kills = group_moment(uninterrupted("outpaint")[1])
    assert kills is not None
    kill_then_rerun(lambda out: cli(out, tiny_t2i, tiny_inpaint), kills,
                    folders(tmp_path, "s.tif"), cli_whole, journal=True)


@needs_strace
def test_a_real_kill_of_an_edit_at_its_fsync_and_its_rename_then_rerun(
        tmp_path, tiny_inpaint, inpaint_model, points):
    """An edit killed by the kernel at its last group's moment (as the scene above) when
    its store keeps a journal, else at its first fsync and its first rename or link (the
    output's, before it is placed); the same command again."""
    from engine.jobs.edit.request import EditRequest
    from engine.jobs.edit.run import edit_raster

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
    args = dict(mask=wkt, mask_crs="EPSG:32618", prompt="a lake", steps=1, tile=64,
                overlap=16, seed=5)

    def edit(out: Path) -> list[str]:
        return [sys.executable, "-m", "engine.cli", "edit", "--raster", str(raster),
                "--model", str(tiny_inpaint), "--precision", "fp32", "--device", "cpu",
                "--quiet", "--out", str(out), "--mask-crs", args["mask_crs"], *(
                    f"--{k}={v}" for k, v in args.items() if k != "mask_crs")]

    # The same edit in-process, for its durability points.
    edit_raster(EditRequest(raster=raster, out=tmp_path / "points.tif", **args), inpaint_model)
    kills = group_moment(points.seen)
    if kills is None:  # no journal: the output's fsync and its placing
        kills = {"fsync": ("fsync", 1), "rename": (PLACES, 1)}
    kill_then_rerun(edit, kills, folders(tmp_path, "e.tif"),
                    Uninterrupted(edit(tmp_path / "whole.tif"), tmp_path / "whole.tif"),
                    journal=kills["rename"][0] == RENAMES)


# A run of the CLI in a process whose durability points can be held: the first run stops at
# its first one (its output locked, its state about to be saved) until ``go`` exists; a run
# given ``start`` imports everything first and starts only once ``start`` exists.
HELD_CLI = """
import sys, time
from pathlib import Path
import engine.jobs.prepared
import engine.scenes.folder as folder
from engine.cli import main

mode, flag = sys.argv[1], Path(sys.argv[2])
def hold(n, what):
    if not (flag.parent / "held").exists():
        (flag.parent / "held").write_text(what)
        while not flag.exists():
            time.sleep(0.02)
if mode == "hold":
    folder.hook = hold
else:
    while not flag.exists():
        time.sleep(0.02)
sys.argv[0:3] = ["text2earth"]
sys.exit(main())
"""


def test_a_second_run_to_the_same_output_is_refused_at_once(tmp_path, tiny_t2i,
                                                            tiny_inpaint, cli_whole):
    cli_whole.start()
    out, signals = tmp_path / "same.tif", tmp_path / "signals"
    signals.mkdir()
    held, go = signals / "held", signals / "go"
    first = subprocess.Popen([sys.executable, "-c", HELD_CLI, "hold", str(go),
                              *cli(out, tiny_t2i, tiny_inpaint, seed=5)[3:]],
                             cwd=ROOT, env=ENV, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True)
    second = subprocess.Popen([sys.executable, "-c", HELD_CLI, "start", str(held),
                               *cli(out, tiny_t2i, tiny_inpaint, seed=8)[3:]],
                              cwd=ROOT, env=ENV, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True)
    try:
        end = time.monotonic() + 240
        while not held.exists():
            assert first.poll() is None, first.communicate()[1]
            assert time.monotonic() < end, "the first run never reached its first point"
            time.sleep(0.05)
        started = time.monotonic()
        assert (tmp_path / lock_name(out)).exists()  # held by the first run
        _, err = second.communicate(timeout=240)
        refused_after = time.monotonic() - started
        assert first.poll() is None, "the first run ended before the second was refused"
        assert second.returncode == 2, err
        lines = err.strip().splitlines()
        assert len(lines) == 1 and f"another Text2Earth run (pid {first.pid}, running since" \
            in lines[0] and str(out) in lines[0], lines
        go.write_text("")
        _, err = first.communicate(timeout=240)
        assert first.returncode == 0, err
    finally:
        for process in (first, second):
            if process.poll() is None:
                process.kill()
                process.wait()
    assert np.array_equal(pixels(out), cli_whole.pixels())  # the first run's, alone
    with rasterio.open(out) as ds:
        assert ds.tags()["TEXT2EARTH_SEED"] == "5"
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
        if tensors["tile"] == 2 and not (tmp_path / "b").exists():
            folder.rename(tmp_path / "b")
            folder.mkdir()  # and another folder in its place
        return tensors

    with pytest.raises(InputError, match="moved or replaced while the job ran") as caught:
        generate(GenerateRequest(**TWO, scene_method="outpaint", out=folder / "s.tif"),
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
