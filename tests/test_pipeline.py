"""The pipeline against diffusers' own StableDiffusionPipeline, used as the authors' reference.

The authors' pipeline_text2earth_diffusion.py is diffusers' StableDiffusionPipeline plus one
thing: class_labels = [0 for the unconditional half, L for the conditional half] on every UNet
call. The reference below is exactly that: diffusers' pipeline, untouched, with a forward
pre-hook on the UNet adding those labels. Nothing of engine.model.pipeline is used to build it.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from diffusers import (
    DDIMScheduler,
    DPMSolverMultistepScheduler,
    EulerDiscreteScheduler,
    StableDiffusionPipeline,
)

from engine.errors import GenerationCancelled, InputError
from engine.model.pipeline import PromptTruncatedWarning

STEPS = 4
REFERENCE_SCHEDULERS = {
    "euler": EulerDiscreteScheduler,
    "ddim": DDIMScheduler,
    "dpm++": DPMSolverMultistepScheduler,
}


def reference_image(pipe, prompt, level, scheduler, seed, negative=None, size=(256, 256),
                    guidance=4.0):
    ref = StableDiffusionPipeline(
        vae=pipe.vae,
        text_encoder=pipe.text_encoder,
        tokenizer=pipe.tokenizer,
        unet=pipe.unet,
        scheduler=REFERENCE_SCHEDULERS[scheduler].from_config(pipe.scheduler.config),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    ref.set_progress_bar_config(disable=True)

    def add_level(module, args, kwargs):
        n = args[0].shape[0] // 2
        kwargs["class_labels"] = torch.tensor([0.0] * n + [float(level)] * n)
        return args, kwargs

    hook = None
    if level is not None:
        hook = pipe.unet.register_forward_pre_hook(add_level, with_kwargs=True)
    try:
        image = ref(
            prompt,
            negative_prompt=negative,
            height=size[0],
            width=size[1],
            num_inference_steps=STEPS,
            guidance_scale=guidance,
            generator=torch.Generator("cpu").manual_seed(seed),
            output_type="pil",
        ).images[0]
    finally:
        if hook is not None:
            hook.remove()
    return np.asarray(image).astype(np.int16)


def ours(pipe, prompt, level=None, scheduler="euler", seed=0, negative=None, size=(256, 256),
         guidance=4.0, **kw):
    pipe.use_scheduler(scheduler)
    out = pipe(
        prompt,
        level=level,
        negative_prompt=negative,
        height=size[0],
        width=size[1],
        num_inference_steps=STEPS,
        guidance_scale=guidance,
        generator=torch.Generator("cpu").manual_seed(seed),
        **kw,
    )
    return out.images[0].astype(np.int16)


@pytest.mark.parametrize("scheduler", ["euler", "ddim", "dpm++"])
def test_matches_reference_pipeline_within_2_dn(t2i_model, scheduler):
    pipe = t2i_model.pipeline
    expected = reference_image(pipe, "circular farmland", 17, scheduler, seed=7)
    got = ours(pipe, "circular farmland", 17, scheduler, seed=7)
    assert got.shape == (256, 256, 3)
    assert np.abs(got - expected).max() <= 2
    assert got.std() > 1  # an image, not a constant


def test_negative_prompt_and_non_square_match_reference(t2i_model):
    pipe = t2i_model.pipeline
    expected = reference_image(pipe, "harbour", 12, "euler", 3, negative="clouds", size=(256, 320))
    got = ours(pipe, "harbour", 12, "euler", 3, negative="clouds", size=(256, 320))
    assert got.shape == (256, 320, 3)
    assert np.abs(got - expected).max() <= 2


def test_git10m_prompt_prefix_equals_explicit_level(t2i_model):
    pipe = t2i_model.pipeline
    a = ours(pipe, "15_GOOGLE_LEVEL_a river through forest", seed=5)
    b = ours(pipe, "a river through forest", level=15, seed=5)
    np.testing.assert_array_equal(a, b)
    with pytest.raises(InputError, match="level 15"):
        ours(pipe, "15_GOOGLE_LEVEL_a river", level=16)


def test_level_reaches_unet_and_changes_the_image(t2i_model):
    pipe = t2i_model.pipeline
    seen = []
    hook = pipe.unet.register_forward_pre_hook(
        lambda m, a, kw: seen.append(kw["class_labels"].tolist()), with_kwargs=True
    )
    try:
        img_12 = ours(pipe, "airport", level=12, seed=11)
    finally:
        hook.remove()
    assert seen and all(labels == [0.0, 12.0] for labels in seen)  # unconditional = level 0
    img_18 = ours(pipe, "airport", level=18, seed=11)
    assert np.abs(img_12 - img_18).max() > 0


def test_unconditional_branch_is_empty_prompt_with_level_0(t2i_model):
    pipe = t2i_model.pipeline
    captured = {}

    def grab(module, args, kwargs):
        captured.setdefault("text", kwargs["encoder_hidden_states"].clone())
        captured.setdefault("labels", kwargs["class_labels"].clone())

    hook = pipe.unet.register_forward_pre_hook(grab, with_kwargs=True)
    try:
        ours(pipe, "vineyards on hills", level=16, seed=1)
    finally:
        hook.remove()
    ids = pipe.tokenizer([""], padding="max_length", max_length=77, return_tensors="pt").input_ids
    with torch.no_grad():
        empty = pipe.text_encoder(ids)[0]
    torch.testing.assert_close(captured["text"][0], empty[0])
    assert captured["labels"].tolist() == [0.0, 16.0]


def test_seed_is_reproducible_and_matters(t2i_model):
    pipe = t2i_model.pipeline
    a = ours(pipe, "desert dunes", 14, seed=123)
    b = ours(pipe, "desert dunes", 14, seed=123)
    c = ours(pipe, "desert dunes", 14, seed=124)
    np.testing.assert_array_equal(a, b)
    assert np.abs(a - c).max() > 0


def test_initial_latents_are_diffusers_cpu_draw(t2i_model):
    """Seeds mean what they mean in diffusers: randn from a CPU generator, 1x4xH/8xW/8."""
    pipe = t2i_model.pipeline
    pipe.use_scheduler("ddim")  # init_noise_sigma == 1, so the first latents are the draw itself
    captured = []
    hook = pipe.unet.register_forward_pre_hook(
        lambda m, a, kw: captured.append(a[0].clone()), with_kwargs=True
    )
    try:
        pipe("x", level=17, num_inference_steps=1, generator=torch.Generator("cpu").manual_seed(9))
    finally:
        hook.remove()
    expected = torch.randn((1, 4, 32, 32), generator=torch.Generator("cpu").manual_seed(9))
    torch.testing.assert_close(captured[0][0:1], expected)


def test_long_prompt_is_truncated_with_a_warning(t2i_model):
    pipe = t2i_model.pipeline
    long_prompt = "green fields and " * 40
    with pytest.warns(PromptTruncatedWarning, match="77"):
        a = ours(pipe, long_prompt, 17, seed=2)
    # What CLIP sees is the first 77 tokens, so any tail beyond them changes nothing.
    with pytest.warns(PromptTruncatedWarning):
        b = ours(pipe, long_prompt + " and a big red stadium", 17, seed=2)
    np.testing.assert_array_equal(a, b)


def test_plain_sd2_checkpoint_runs_without_class_labels(tiny_sd2):
    from engine.model.checkpoint import load_model

    model = load_model(str(tiny_sd2), "cpu", precision="fp32")
    pipe = model.pipeline
    assert not pipe.has_level_embedding
    seen = []
    hook = pipe.unet.register_forward_pre_hook(
        lambda m, a, kw: seen.append(kw.get("class_labels")), with_kwargs=True
    )
    try:
        got = ours(pipe, "a town", 17, seed=4)
    finally:
        hook.remove()
    assert seen and all(v is None for v in seen)
    expected = reference_image(pipe, "a town", None, "euler", 4)
    assert np.abs(got - expected).max() <= 2


def test_step_callback_reports_every_step_and_can_cancel(t2i_model):
    pipe = t2i_model.pipeline
    steps = []

    def on_step(p, i, t, tensors):
        steps.append(i)
        return tensors

    ours(pipe, "lake", 17, seed=0, callback_on_step_end=on_step)
    assert steps == list(range(STEPS))

    def cancel_at_2(p, i, t, tensors):
        if i == 1:
            p.cancel()
        return tensors

    with pytest.raises(GenerationCancelled, match="step 2 of 4"):
        ours(pipe, "lake", 17, seed=0, callback_on_step_end=cancel_at_2)
    # A cancelled run leaves the pipeline usable.
    assert ours(pipe, "lake", 17, seed=0).shape == (256, 256, 3)


def test_bad_sizes_and_levels_are_refused(t2i_model):
    pipe = t2i_model.pipeline
    with pytest.raises(InputError, match="multiple of 8"):
        ours(pipe, "x", 17, size=(250, 256))
    with pytest.raises(InputError, match="range"):
        ours(pipe, "x", 25)
    with pytest.raises(InputError, match="steps"):
        pipe("x", level=17, num_inference_steps=0)


def test_inpainting_matches_reference_inpaint_pipeline_within_2_dn(tiny_inpaint):
    """The 9-channel model against diffusers' StableDiffusionInpaintPipeline + the level hook."""
    from diffusers import StableDiffusionInpaintPipeline
    from PIL import Image

    from engine.model.checkpoint import load_model

    pipe = load_model(str(tiny_inpaint), "cpu", precision="fp32").pipeline
    image = np.random.default_rng(0).integers(0, 256, (256, 256, 3), dtype=np.uint8)
    mask = np.zeros((256, 256), np.float32)
    mask[:, 128:] = 1
    ref = StableDiffusionInpaintPipeline(
        vae=pipe.vae, text_encoder=pipe.text_encoder, tokenizer=pipe.tokenizer, unet=pipe.unet,
        scheduler=EulerDiscreteScheduler.from_config(pipe.scheduler.config), safety_checker=None,
        feature_extractor=None, requires_safety_checker=False)
    ref.set_progress_bar_config(disable=True)

    def add_level(module, args, kwargs):
        n = args[0].shape[0] // 2
        kwargs["class_labels"] = torch.tensor([0.0] * n + [16.0] * n)
        return args, kwargs

    hook = pipe.unet.register_forward_pre_hook(add_level, with_kwargs=True)
    try:
        expected = ref("a lake", image=Image.fromarray(image),
                       mask_image=Image.fromarray((mask * 255).astype(np.uint8)), height=256,
                       width=256, num_inference_steps=STEPS, guidance_scale=3.5,
                       generator=torch.Generator("cpu").manual_seed(3)).images[0]
    finally:
        hook.remove()
    pipe.use_scheduler("euler")
    got = pipe("a lake", image, mask, level=16, num_inference_steps=STEPS,
               generator=torch.Generator("cpu").manual_seed(3)).images[0]
    assert np.abs(got.astype(np.int16) - np.asarray(expected).astype(np.int16)).max() <= 2
    # The kept half conditions the result: another image there changes the generated half.
    other = pipe("a lake", 255 - image, mask, level=16, num_inference_steps=STEPS,
                 generator=torch.Generator("cpu").manual_seed(3)).images[0]
    assert np.abs(other[:, 128:].astype(int) - got[:, 128:]).max() > 0


def reference_inpaint(pipe, image, mask_u8, level, seed, binarize, guidance=3.5):
    """diffusers' StableDiffusionInpaintPipeline + the level hook; with ``binarize=False`` its
    mask processor is configured as the authors' pipeline_text2earth_diffusion_inpaint.py
    configures theirs (VaeImageProcessor(do_normalize=False, do_binarize=False,
    do_convert_grayscale=True)): a soft mask reaches the UNet as it is."""
    from diffusers import StableDiffusionInpaintPipeline
    from diffusers.image_processor import VaeImageProcessor
    from PIL import Image

    ref = StableDiffusionInpaintPipeline(
        vae=pipe.vae, text_encoder=pipe.text_encoder, tokenizer=pipe.tokenizer, unet=pipe.unet,
        scheduler=EulerDiscreteScheduler.from_config(pipe.scheduler.config), safety_checker=None,
        feature_extractor=None, requires_safety_checker=False)
    ref.set_progress_bar_config(disable=True)
    if not binarize:
        ref.mask_processor = VaeImageProcessor(vae_scale_factor=ref.vae_scale_factor,
                                               do_normalize=False, do_binarize=False,
                                               do_convert_grayscale=True)

    def add_level(module, args, kwargs):
        n = args[0].shape[0] // 2
        kwargs["class_labels"] = torch.tensor([0.0] * n + [float(level)] * n)
        return args, kwargs

    hook = pipe.unet.register_forward_pre_hook(add_level, with_kwargs=True)
    try:
        out = ref("a lake", image=Image.fromarray(image), mask_image=Image.fromarray(mask_u8),
                  height=image.shape[0], width=image.shape[1], num_inference_steps=STEPS,
                  guidance_scale=guidance, generator=torch.Generator("cpu").manual_seed(seed))
    finally:
        hook.remove()
    return np.asarray(out.images[0]).astype(np.int16)


def test_soft_mask_reaches_the_unet_unbinarized_as_in_the_authors_pipeline(tiny_inpaint):
    """The authors' inpainting pipeline does not binarize the mask: a feathered mask's values
    go to the UNet's mask channel as they are (the masked image still keeps pixels < 0.5)."""
    from engine.model.checkpoint import load_model

    pipe = load_model(str(tiny_inpaint), "cpu", precision="fp32").pipeline
    image = np.random.default_rng(1).integers(0, 256, (256, 256, 3), dtype=np.uint8)
    mask_u8 = np.zeros((256, 256), np.uint8)  # keep the left quarter, then a ramp, then new
    mask_u8[:, 64:192] = np.linspace(0, 255, 128).round().astype(np.uint8)[None, :]
    mask_u8[:, 192:] = 255
    mask = mask_u8.astype(np.float32) / 255.0  # what diffusers makes of the PIL mask
    expected = reference_inpaint(pipe, image, mask_u8, 16, seed=5, binarize=False)
    binarized = reference_inpaint(pipe, image, mask_u8, 16, seed=5, binarize=True)
    assert np.abs(expected - binarized).max() > 2  # the test can tell the two apart
    pipe.use_scheduler("euler")
    got = pipe("a lake", image, mask, level=16, num_inference_steps=STEPS,
               generator=torch.Generator("cpu").manual_seed(5)).images[0].astype(np.int16)
    assert np.abs(got - expected).max() <= 2
    # The same through the batched entry point the scene and edit jobs use.
    pipe.use_scheduler("euler")
    batch = pipe.inpaint_batch(["a lake"], [image], [mask], 16, None, STEPS, 3.5,
                               [torch.Generator("cpu").manual_seed(5)]).images[0]
    assert np.abs(batch.astype(np.int16) - expected).max() <= 2


def test_inpainting_defaults_to_the_authors_guidance_3_5(tiny_inpaint):
    from engine.model.checkpoint import load_model

    pipe = load_model(str(tiny_inpaint), "cpu", precision="fp32").pipeline
    image = np.random.default_rng(2).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    mask = np.ones((64, 64), np.float32)
    runs = {}
    for guidance in (None, 3.5, 4.0):
        pipe.use_scheduler("euler")
        kw = {} if guidance is None else {"guidance_scale": guidance}
        runs[guidance] = pipe("a lake", image, mask, level=16, num_inference_steps=2,
                              generator=torch.Generator("cpu").manual_seed(1), **kw).images[0]
    np.testing.assert_array_equal(runs[None], runs[3.5])
    assert np.abs(runs[None].astype(int) - runs[4.0]).max() > 0
    # Unbinarized, a value outside 0..1 would reach the UNet: refused before any work.
    for bad in (mask * 255, mask - 2, mask * np.nan):
        with pytest.raises(InputError, match="0..1"):
            pipe("a lake", image, bad, level=16, num_inference_steps=1)


def test_prepare_latents_draws_as_diffusers_for_any_batch_and_channels(t2i_model):
    """prepare_latents(batch, channels, ...) against diffusers' StableDiffusionPipeline's
    (the same signature): one generator per item or one for the batch, scaled for Euler."""
    pipe = t2i_model.pipeline
    ref = StableDiffusionPipeline(
        vae=pipe.vae, text_encoder=pipe.text_encoder, tokenizer=pipe.tokenizer, unet=pipe.unet,
        scheduler=EulerDiscreteScheduler.from_config(pipe.scheduler.config), safety_checker=None,
        feature_extractor=None, requires_safety_checker=False)
    ref.scheduler.set_timesteps(STEPS)
    pipe.use_scheduler("euler")
    pipe.scheduler.set_timesteps(STEPS)
    assert pipe.scheduler.init_noise_sigma > 1  # so the scaling is really checked
    for batch, channels, seeds in ((1, 4, [3]), (3, 4, [1, 2, 3]), (2, 8, [5, 6])):
        def generator(seeds=seeds):  # one generator, or one per item
            made = [torch.Generator("cpu").manual_seed(s) for s in seeds]
            return made[0] if len(made) == 1 else made

        got = pipe.prepare_latents(batch, channels, 64, 96, torch.float32, "cpu", generator())
        expected = ref.prepare_latents(batch, channels, 64, 96, torch.float32, "cpu",
                                       generator())
        assert got.shape == (batch, channels, 8, 12)
        torch.testing.assert_close(got, expected, rtol=0, atol=0)
    given = torch.ones((1, 4, 8, 8))
    torch.testing.assert_close(
        pipe.prepare_latents(1, 4, 64, 64, torch.float32, "cpu", None, latents=given),
        given * pipe.scheduler.init_noise_sigma)


def test_predict_noise_is_one_guided_unet_call(t2i_model):
    """uncond + g * (cond - uncond) from one UNet call on [N unconditional; N conditional]
    rows (the model notes' guidance), against the UNet called directly per branch."""
    pipe = t2i_model.pipeline
    pipe.use_scheduler("ddim")  # scale_model_input is the identity: the UNet sees the latents
    pipe.scheduler.set_timesteps(STEPS)
    t = pipe.scheduler.timesteps[1]
    latents = torch.randn((2, 4, 8, 8), generator=torch.Generator().manual_seed(0))
    embeds, labels = pipe.condition_batch(["a port", "a forest"], None, 15, 4.0)
    calls = []
    hook = pipe.unet.register_forward_pre_hook(lambda m, a: calls.append(a[0].shape))
    try:
        with torch.no_grad():
            got = pipe.predict_noise(latents, t, embeds, labels, 4.0)
    finally:
        hook.remove()
    assert calls == [(4, 4, 8, 8)]  # one call, both branches of both items
    with torch.no_grad():
        for k, text in enumerate(["a port", "a forest"]):
            cond = pipe.condition(text, None, 15, 4.0)[0]
            ref = [pipe.unet(latents[k : k + 1], t, encoder_hidden_states=cond[j : j + 1],
                             class_labels=torch.tensor([level])).sample
                   for j, level in ((0, 0.0), (1, 15.0))]
            torch.testing.assert_close(got[k : k + 1], ref[0] + 4.0 * (ref[1] - ref[0]),
                                       rtol=1e-4, atol=1e-5)
        # Guidance <= 1: no unconditional branch, the conditional prediction as it is.
        cond = pipe.condition("a port", None, 15, 1.0)[0]
        alone = pipe.predict_noise(latents[:1], t, cond, pipe.level_labels(15, False, "cpu"), 1.0)
        torch.testing.assert_close(
            alone, pipe.unet(latents[:1], t, encoder_hidden_states=cond,
                             class_labels=torch.tensor([15.0])).sample, rtol=1e-4, atol=1e-5)


def eight_channel_pipeline(tmp_path):
    """A tiny Text2Earth pipeline whose VAE has 8 latent channels (not SD's 4)."""
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel

    from engine.model.pipeline import Text2EarthPipeline
    from engine.model.tiny_checkpoint import (
        SCHEDULER_CONFIG,
        text_encoder_config,
        unet_config,
        vae_config,
        write_clip_tokenizer,
    )

    torch.manual_seed(0)
    pipe = Text2EarthPipeline(
        vae=AutoencoderKL(**{**vae_config(), "latent_channels": 8}),
        text_encoder=CLIPTextModel(text_encoder_config()),
        tokenizer=write_clip_tokenizer(tmp_path / "tokenizer"),
        unet=UNet2DConditionModel(**{**unet_config(8), "out_channels": 8}),
        scheduler=DDIMScheduler(**SCHEDULER_CONFIG))
    pipe.vae.eval(), pipe.unet.eval(), pipe.text_encoder.eval()
    return pipe


def test_latent_channels_come_from_the_model_in_every_path(tmp_path):
    """An 8-latent-channel model: the pipeline against diffusers' reference, and joint
    denoising (which hard-coded 4 channels) of a one-window scene against the pipeline."""
    from affine import Affine
    from pyproj import CRS

    from engine.geo.geotiff import scratch_profile
    from engine.geo.tiling import plan_scene, tile_seed
    from engine.scenes.folder import OutputFolder
    from engine.scenes.job import SceneJob
    from engine.scenes.joint import run_joint
    from engine.scenes.store import WindowStore

    pipe = eight_channel_pipeline(tmp_path)
    assert pipe.num_channels_latents == 8
    expected = reference_image(pipe, "farmland", 17, "ddim", seed=tile_seed(3, 0, 0),
                               size=(64, 64))
    got = ours(pipe, "farmland", 17, "ddim", seed=tile_seed(3, 0, 0), size=(64, 64))
    assert np.abs(got - expected).max() <= 2

    plan = plan_scene(64, 64, 64, 16)
    assert (plan.nx, plan.ny, plan.canvas_width) == (1, 1, 64)
    job = SceneJob("farmland", None, 17, STEPS, 4.0, 3, tmp_path / "out.tif",
                   CRS.from_epsg(32632), Affine(1, 0, 447000, 0, -1, 5411000), False, None)
    scratch = tmp_path / "scratch.tif"
    store = WindowStore.fresh(OutputFolder(tmp_path), scratch,
                              scratch_profile(64, 64, job.crs, job.transform))
    pipe.use_scheduler("ddim")
    run_joint(pipe, job, plan, store, None)
    store.close()
    import rasterio

    with rasterio.open(scratch) as ds:
        joint = np.moveaxis(ds.read(), 0, 2).astype(np.int16)
    assert np.abs(joint - got).max() <= 2 and joint.std() > 1
