"""Speed: precision choice and its accuracy, batched scene windows, compile and memory savers.

Speed itself is measured by `make bench`; these tests check that the fast paths decide right
and compute the same thing as the exact ones.
"""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
import torch

from engine.errors import InputError
from engine.geo.tiling import plan_scene
from engine.jobs.generate import GenerateRequest, generate
from engine.model.accelerate import (
    ATTENTION_SLICING,
    SEQUENTIAL_OFFLOAD,
    VAE_TILING,
    choose_memory_savers,
    compile_unet,
    should_compile,
)
from engine.model.precision import (
    DeviceFacts,
    auto_precision,
    device_facts,
    part_dtypes,
    resolve_precision,
)
from engine.scenes.window_batch import wavefronts, window_batch_size

GIB = 2**30
UTM = "EPSG:32632"
# 3 x 2 windows of 256 px with 64 overlap at level 17 (as in test_scene)
BBOX = (447000.0, 5411000.0, 447400.0, 5411300.0)
EPYC_FLAGS = frozenset("fpu sse2 avx2 avx512f avx512bw avx512_bf16 avx512_vnni".split())
SKYLAKE_FLAGS = frozenset("fpu sse2 avx2 avx512f avx512bw avx512_vnni".split())
SAPPHIRE_RAPIDS_FLAGS = frozenset("avx2 avx512f amx_tile amx_bf16 amx_int8".split())
GRAVITON3_FEATURES = frozenset("fp asimd sve bf16 i8mm".split())


@pytest.mark.parametrize("facts,expected", [
    (DeviceFacts("cuda"), "fp16"),
    (DeviceFacts("cpu", EPYC_FLAGS), "bf16"),
    (DeviceFacts("cpu", SAPPHIRE_RAPIDS_FLAGS), "bf16"),
    (DeviceFacts("cpu", GRAVITON3_FEATURES), "bf16"),
    (DeviceFacts("cpu", frozenset({"FEAT_BF16"})), "bf16"),  # Apple M2+ CPU (sysctl)
    (DeviceFacts("cpu", SKYLAKE_FLAGS), "fp32"),
    (DeviceFacts("cpu"), "fp32"),
    (DeviceFacts("mps", mps_bf16=True), "bf16"),
    (DeviceFacts("mps", mps_bf16=False), "fp16"),
])
def test_auto_precision_follows_the_device(facts, expected):
    assert auto_precision(facts) == expected
    assert resolve_precision(None, facts) == expected == resolve_precision(" AUTO ", facts)


def test_explicit_precisions_and_refusals():
    cpu = DeviceFacts("cpu", EPYC_FLAGS)
    assert resolve_precision("fp32", DeviceFacts("cuda")) == "fp32"
    assert resolve_precision("bf16", DeviceFacts("cpu", SKYLAKE_FLAGS)) == "bf16"  # emulated
    with pytest.raises(InputError, match="fp16 runs on GPUs only.*--precision bf16"):
        resolve_precision("fp16", cpu)
    with pytest.raises(InputError, match="--precision fp32"):
        resolve_precision("fp16", DeviceFacts("cpu", SKYLAKE_FLAGS))
    with pytest.raises(InputError, match="macOS 14"):
        resolve_precision("bf16", DeviceFacts("mps"))
    with pytest.raises(InputError, match="unknown precision 'fp8'"):
        resolve_precision("fp8", cpu)
    # The SD2 VAE overflows in fp16: it stays fp32 there; bf16 has fp32's range.
    assert part_dtypes("fp16") == {"unet": torch.float16, "text_encoder": torch.float16,
                                   "vae": torch.float32}
    assert set(part_dtypes("bf16").values()) == {torch.bfloat16}


def test_this_machines_cpu_flags_and_the_override(monkeypatch):
    with open("/proc/cpuinfo") as fh:
        native = "avx512_bf16" in fh.read().split()
    monkeypatch.delenv("TEXT2EARTH_CPU_FLAGS", raising=False)
    facts = device_facts(torch.device("cpu"))
    assert ("avx512_bf16" in facts.cpu_flags) == native
    monkeypatch.setenv("TEXT2EARTH_CPU_FLAGS", "sse2 avx2")
    assert auto_precision(device_facts(torch.device("cpu"))) == "fp32"


@pytest.mark.parametrize("flags,expected", [
    (" ".join(sorted(EPYC_FLAGS)), "bf16"),  # an AMD EPYC with avx512_bf16
    (" ".join(sorted(SKYLAKE_FLAGS)), "fp32"),  # an Intel Skylake without it
])
def test_auto_loads_what_the_cpu_can_run(monkeypatch, tiny_t2i, flags, expected):
    """`auto` end to end (load_model and the precision the CLI checks up front), on faked CPU
    facts of both kinds: the same answer on every machine this suite runs on."""
    from engine.model.checkpoint import load_model
    from engine.model.precision import check_precision

    monkeypatch.setenv("TEXT2EARTH_CPU_FLAGS", flags)
    assert check_precision("auto", "cpu") == expected
    model = load_model(str(tiny_t2i), "cpu")  # precision left to auto
    assert model.precision == expected
    assert model.pipeline.unet.dtype == {"bf16": torch.bfloat16, "fp32": torch.float32}[expected]


def test_the_cli_says_which_precision_auto_chose(monkeypatch, capsys, tiny_t2i, tmp_path):
    from engine.cli import main

    monkeypatch.setenv("TEXT2EARTH_CPU_FLAGS", " ".join(sorted(EPYC_FLAGS)))
    out = tmp_path / "auto.tif"
    code = main(["generate", "--bbox", "447000,5411000,447100,5411100", "--crs", UTM,
                 "--prompt", "a park", "--model", str(tiny_t2i), "--device", "cpu",
                 "--steps", "1", "--seed", "1", "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 0, err
    assert "precision bf16" in err.splitlines()[0]
    with rasterio.open(out) as ds:
        assert ds.tags()["TEXT2EARTH_PRECISION"] == "bf16"


@pytest.fixture(scope="module")
def bf16_model(tiny_t2i):
    from engine.model.checkpoint import load_model

    return load_model(str(tiny_t2i), "cpu", precision="bf16")


def test_bf16_is_close_to_the_fp32_reference_and_tagged(tmp_path, t2i_model, bf16_model):
    assert bf16_model.precision == "bf16" and t2i_model.precision == "fp32"
    assert bf16_model.pipeline.unet.dtype == torch.bfloat16
    images = {}
    for name, model in (("fp32", t2i_model), ("bf16", bf16_model)):
        request = GenerateRequest(bbox=(447000.0, 5411000.0, 447200.0, 5411200.0), crs=UTM,
                                  prompt="a park", level=17, seed=5, steps=2,
                                  out=tmp_path / f"{name}.tif")
        result = generate(request, model)
        assert result.tags["TEXT2EARTH_PRECISION"] == name
        with rasterio.open(result.path) as ds:
            assert ds.tags()["TEXT2EARTH_PRECISION"] == name
            images[name] = ds.read().astype(np.int16)
    diff = np.abs(images["bf16"] - images["fp32"])
    # fp32 is the reference arithmetic (test_pipeline); bf16 stays within a few DN of it, and
    # is an image (no NaN turned black, no constant tile).
    assert diff.mean() < 2.0 and np.percentile(diff, 99) <= 8, (diff.mean(), diff.max())
    assert images["bf16"].std() > 1 and (images["bf16"] > 0).mean() > 0.99


def test_fp16_on_cpu_is_refused_before_loading(tmp_path, capsys):
    from engine.cli import main

    code = main(["generate", "--bbox", "447000,5411000,447200,5411200", "--crs", UTM,
                 "--prompt", "x", "--level", "17", "--device", "cpu", "--precision", "fp16",
                 "--model", str(tmp_path / "no-such-model"), "--out", str(tmp_path / "o.tif")])
    err = capsys.readouterr().err
    assert code != 0 and "fp16 runs on GPUs only" in err and "Traceback" not in err
    assert not (tmp_path / "o.tif").exists()


def test_model_cache_keys_on_precision(tiny_t2i):
    from engine.model.checkpoint import resolve_checkpoint
    from engine.service.runner import ModelManager, ServiceConfig

    models = ModelManager(ServiceConfig(None, "cpu", [], 10**8, precision="fp32"))
    checkpoint = resolve_checkpoint(str(tiny_t2i))
    fp32 = models.load(checkpoint)
    assert models.load(checkpoint, precision="fp32") is fp32 and fp32.precision == "fp32"
    bf16 = models.load(checkpoint, precision="bf16")
    assert bf16 is not fp32 and bf16.precision == "bf16"
    assert models.describe()[0]["precision"] == "bf16"


def windows_overlap(plan, a, b) -> bool:
    return abs(a.col - b.col) < plan.tile and abs(a.row - b.row) < plan.tile


@pytest.mark.parametrize("tile,overlap", [(256, 64), (512, 128), (256, 128), (512, 0)])
def test_wavefronts_keep_row_order_between_touching_windows(tile, overlap):
    plan = plan_scene(7 * tile, 5 * tile, tile, overlap)
    fronts = wavefronts(plan)
    assert sorted(w.index for f in fronts for w in f) == list(range(plan.nx * plan.ny))
    front_of = {w.key: n for n, f in enumerate(fronts) for w in f}
    windows = plan.windows()
    for a in windows:
        for b in windows:
            if a is b or not windows_overlap(plan, a, b):
                continue
            # Touching windows: never in one batch, and in row order (a's context is b's).
            assert front_of[a.key] != front_of[b.key]
            assert (front_of[a.key] < front_of[b.key]) == (a.index < b.index)
    assert max(len(f) for f in fronts) >= 3  # batches really hold several windows


def test_window_batch_size_follows_free_memory():
    assert window_batch_size(None, 512, 2, True) == 1
    assert window_batch_size(0, 512, 2, True) == 1
    small = window_batch_size(4 * GIB, 512, 2, True)
    big = window_batch_size(40 * GIB, 512, 2, True)
    assert 1 <= small < big <= 16
    assert window_batch_size(4 * GIB, 512, 4, True) <= small  # fp32 needs twice the bytes
    assert window_batch_size(4 * GIB, 256, 2, True) >= small  # a quarter of the latents
    assert window_batch_size(40 * GIB, 512, 2, True, limit=4) == 4


def scene(tmp_path, model, name, callback=None, **kw):
    fields = dict(bbox=BBOX, crs=UTM, prompt="farmland", out=tmp_path / name, level=17, seed=3,
                  steps=2, tile=256, overlap=64)
    fields.update(kw)
    with rasterio.open(generate(GenerateRequest(**fields), model, callback).path) as ds:
        return ds.read().astype(np.int16)


def test_batched_joint_denoising_equals_one_window_at_a_time(tmp_path, t2i_model):
    one = scene(tmp_path, t2i_model, "one.tif", scheduler="ddim", window_batch=1)
    batched = scene(tmp_path, t2i_model, "all.tif", scheduler="ddim", window_batch=6)
    diff = np.abs(one - batched)
    # The same arithmetic; only the kernels' blocking for another batch size differs.
    assert diff.max() <= 1 and diff.mean() < 0.01, (diff.max(), diff.mean())
    assert one.std() > 1


def test_batched_outpainting_equals_row_order(tmp_path, tiny_inpaint):
    from engine.model.checkpoint import load_model

    model = load_model(str(tiny_inpaint), "cpu", precision="fp32")
    steps = []
    one = scene(tmp_path, model, "one.tif", window_batch=1)
    batched = scene(tmp_path, model, "two.tif", lambda p, i, t, x: steps.append((x["tile"], i)),
                    window_batch=2)
    diff = np.abs(one - batched)
    assert diff.max() <= 1 and diff.mean() < 0.01, (diff.max(), diff.mean())
    # Progress still counts every window's steps (2 windows share the last two wavefronts).
    assert sorted(steps) == [(tile, i) for tile in range(1, 7) for i in range(2)]


def test_compile_switch_and_compiled_unet_gives_the_same_image(tiny_t2i):
    from engine.model.checkpoint import load_model

    assert should_compile(None, "cuda") and not should_compile(None, "cpu")
    assert should_compile(True, "cpu") and not should_compile(False, "cuda")
    model = load_model(str(tiny_t2i), "cpu", precision="fp32")
    assert model.speed == {"compiled": False, "channels_last": False, "sdpa": True,
                           "memory_savers": [], "why": "", "compile_cached": None}
    pipe = model.pipeline

    def image():
        return pipe("a park", level=17, num_inference_steps=2,
                    generator=torch.Generator("cpu").manual_seed(1)).images[0]

    eager = image()
    other = pipe("a park", level=17, num_inference_steps=2, height=128, width=64,
                 generator=torch.Generator("cpu").manual_seed(1)).images[0]
    # The wiring (a compiled module standing in for the UNet) with a backend that counts
    # dynamo's graphs and runs them eagerly (inductor is tested in test_cpu_compile.py).
    graphs, done = [], []

    def counting(gm, example_inputs):
        graphs.append(tuple(example_inputs[0].shape))
        return gm.forward

    pipe.use_scheduler("ddim")
    ddim = image()
    pipe.use_scheduler("euler")
    compile_unet(pipe, backend=counting, on_compiled=lambda: done.append(True))
    assert type(pipe.unet).__name__ == "CompiledOnce"
    assert pipe.unet.config.in_channels == 4 and pipe.unet.dtype == torch.float32
    assert sum(p.numel() for p in pipe.unet.parameters()) == sum(
        p.numel() for p in pipe.unet.eager.parameters())  # the weights once, not twice
    np.testing.assert_array_equal(image(), eager)
    assert len(graphs) == 1 and done == [True]  # compiled once, for a 256 px window
    # Another shape, another scheduler's integer timesteps: the same weights run eagerly, no
    # second compile (minutes on a CPU).
    np.testing.assert_array_equal(
        pipe("a park", level=17, num_inference_steps=2, height=128, width=64,
             generator=torch.Generator("cpu").manual_seed(1)).images[0], other)
    pipe.use_scheduler("ddim")
    np.testing.assert_array_equal(image(), ddim)
    pipe.use_scheduler("euler")
    np.testing.assert_array_equal(image(), eager)
    assert len(graphs) == 1 and done == [True]


def test_a_compile_that_fails_leaves_the_model_running_eagerly(tiny_t2i, capsys):
    from engine.model.checkpoint import load_model

    pipe = load_model(str(tiny_t2i), "cpu", precision="fp32").pipeline

    def image():
        return pipe("a park", level=17, num_inference_steps=2,
                    generator=torch.Generator("cpu").manual_seed(1)).images[0]

    eager = image()
    attempts = []

    def broken(gm, example_inputs):  # as inductor without a C++ compiler
        attempts.append(1)
        raise RuntimeError("cl.exe not found")

    compile_unet(pipe, backend=broken)
    np.testing.assert_array_equal(image(), eager)
    np.testing.assert_array_equal(image(), eager)
    assert len(attempts) == 1  # tried once, not at every step
    assert pipe.unet.state.startswith("failed")
    assert "compiling the UNet failed" in capsys.readouterr().err


def test_memory_savers_only_when_the_card_is_too_small():
    weights = int(2.6 * GIB)  # Text2Earth in fp16
    assert choose_memory_savers(80 * GIB, weights, 512, 2)[0] == []
    assert choose_memory_savers(None, weights, 512, 2)[0] == []
    savers, why = choose_memory_savers(int(4.5 * GIB), weights, 1024, 2)
    assert savers == [ATTENTION_SLICING, VAE_TILING] and "GiB free" in why
    savers, why = choose_memory_savers(2 * GIB, weights, 512, 2)
    assert savers == [ATTENTION_SLICING, VAE_TILING, SEQUENTIAL_OFFLOAD]
