"""The image-to-image primitive against diffusers' own StableDiffusionImg2ImgPipeline.

The reference is diffusers' img2img pipeline, untouched, with a forward pre-hook on the UNet
adding the level's class_labels ([0] * n unconditional, [L] * n conditional) as the authors'
pipeline does; the timestep rule is diffusers' own get_timesteps. Nothing of engine.model.img2img
builds either. Pixel comparisons run in fp32 (the t2i_model fixture).
"""

from __future__ import annotations

import types

import numpy as np
import pytest
import torch
from diffusers import (
    DDIMScheduler,
    DPMSolverMultistepScheduler,
    EulerDiscreteScheduler,
    StableDiffusionImg2ImgPipeline,
)
from PIL import Image

from engine.errors import InputError
from engine.model.img2img import img2img, img2img_batch, noised_latents, strength_timesteps

STEPS = 6
REFERENCE = {"euler": EulerDiscreteScheduler, "ddim": DDIMScheduler,
             "dpm++": DPMSolverMultistepScheduler}


def make_image(size: int = 64, seed: int = 3) -> np.ndarray:
    """A structured picture: gradients, a bright square and a little noise."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size]
    image = np.stack([x * 255 / size, y * 255 / size, (x + y) * 127 / size], -1)
    image[size // 4 : size // 2, size // 4 : size // 2] = 230
    image += rng.normal(0, 8, image.shape)
    return np.clip(image, 0, 255).astype(np.uint8)


def reference(pipe, prompt, level, image, strength, scheduler, seed, guidance=4.0):
    ref = StableDiffusionImg2ImgPipeline(
        vae=pipe.vae, text_encoder=pipe.text_encoder, tokenizer=pipe.tokenizer,
        unet=pipe.unet, scheduler=REFERENCE[scheduler].from_config(pipe.scheduler.config),
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )
    ref.set_progress_bar_config(disable=True)

    def add_level(module, args, kwargs):
        n = args[0].shape[0] // 2
        kwargs["class_labels"] = torch.tensor([0.0] * n + [float(level)] * n)
        return args, kwargs

    hook = pipe.unet.register_forward_pre_hook(add_level, with_kwargs=True)
    try:
        out = ref(prompt, image=Image.fromarray(image), strength=strength,
                  num_inference_steps=STEPS, guidance_scale=guidance,
                  generator=torch.Generator("cpu").manual_seed(seed), output_type="pil")
    finally:
        hook.remove()
    return np.asarray(out.images[0]).astype(np.int16)


@pytest.mark.parametrize("scheduler", ["euler", "ddim", "dpm++"])
@pytest.mark.parametrize("steps,strength", [(50, 0.6), (6, 0.5), (7, 0.99), (10, 1.0),
                                            (4, 0.2)])
def test_timesteps_follow_diffusers_get_timesteps(t2i_model, scheduler, steps, strength):
    config = t2i_model.pipeline.scheduler.config
    ours_s, theirs_s = REFERENCE[scheduler].from_config(config), \
        REFERENCE[scheduler].from_config(config)
    timesteps, start = strength_timesteps(ours_s, steps, strength)
    theirs_s.set_timesteps(steps)
    fake = types.SimpleNamespace(scheduler=theirs_s)
    expected, runs = StableDiffusionImg2ImgPipeline.get_timesteps(fake, steps, strength, "cpu")
    assert torch.equal(timesteps, expected)
    assert len(timesteps) == runs == int(steps * strength)
    assert start == steps - runs
    if hasattr(theirs_s, "begin_index"):
        assert ours_s.begin_index == theirs_s.begin_index


@pytest.mark.parametrize("scheduler", ["euler", "ddim", "dpm++"])
def test_matches_diffusers_img2img_with_the_level(t2i_model, scheduler):
    pipe = t2i_model.pipeline
    image = make_image()
    expected = reference(pipe, "river delta", 15, image, 0.6, scheduler, seed=5)
    pipe.use_scheduler(scheduler)
    got = img2img(pipe, "river delta", image, 0.6, level=15, num_inference_steps=STEPS,
                  generator=torch.Generator("cpu").manual_seed(5)).images[0].astype(np.int16)
    assert got.shape == (64, 64, 3)
    assert np.abs(got - expected).max() <= 1


def test_level_reaches_the_unet(t2i_model):
    pipe = t2i_model.pipeline
    seen = []
    hook = pipe.unet.register_forward_pre_hook(
        lambda m, a, kw: seen.append(kw["class_labels"].tolist()), with_kwargs=True)
    try:
        img2img(pipe, "13_GOOGLE_LEVEL_farmland", make_image(), 0.5, num_inference_steps=STEPS,
                generator=1)
    finally:
        hook.remove()
    assert seen and all(labels == [0.0, 13.0] for labels in seen)
    assert len(seen) == int(STEPS * 0.5)  # only the kept steps run


def test_strength_zero_returns_the_input_without_any_model_call(t2i_model):
    pipe = t2i_model.pipeline
    image = make_image()

    def refuse(*args, **kwargs):
        raise AssertionError("a model was called")

    hooks = [m.register_forward_pre_hook(refuse) for m in (pipe.unet, pipe.vae,
                                                             pipe.text_encoder)]
    try:
        for strength in (0.0, 0.1):  # 0.1 of 6 steps keeps none
            out = img2img(pipe, "forest", image, strength, level=16, num_inference_steps=STEPS,
                          generator=0).images[0]
            assert out.dtype == np.uint8 and np.array_equal(out, image)
    finally:
        for h in hooks:
            h.remove()


def test_mean_change_grows_with_strength_fp32(t2i_model):
    """The tiny model's VAE is random, so its round trip alone changes every pixel: the
    change is measured from the input's own latents (diffusers' AutoencoderKL, its mean) to
    the denoised ones, and in pixels from the input's VAE round trip, each averaged over
    seeds. Strength 0 changes nothing at all."""
    pipe = t2i_model.pipeline
    pipe.use_scheduler("ddim")
    image = make_image()
    pixels = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 127.5 - 1.0
    with torch.no_grad():
        clean = pipe.vae.encode(pixels).latent_dist.mode() * pipe.vae.config.scaling_factor
        round_trip = pipe.vae.decode(clean / pipe.vae.config.scaling_factor).sample
    round_trip = ((round_trip[0].permute(1, 2, 0) / 2 + 0.5).clamp(0, 1) * 255).numpy()
    latent_change, pixel_change = [], []
    for strength in (0.2, 0.6, 1.0):
        lat, pix = [], []
        for seed in range(3):
            final = {}

            def keep(p, i, t, tensors, final=final):
                final["latents"] = tensors["latents"]
                return tensors

            out = img2img(pipe, "desert dunes", image, strength, level=14,
                          num_inference_steps=10, generator=seed,
                          callback_on_step_end=keep).images[0]
            lat.append((final["latents"] - clean).abs().mean().item())
            pix.append(np.abs(out.astype(np.float64) - round_trip).mean())
        latent_change.append(np.mean(lat))
        pixel_change.append(np.mean(pix))
    assert (np.diff(latent_change) > 0).all(), latent_change
    assert latent_change[-1] > 3 * latent_change[0], latent_change
    assert (np.diff(pixel_change) > 0).all(), pixel_change
    zero = img2img(pipe, "desert dunes", image, 0.0, level=14, generator=0).images[0]
    assert np.abs(zero.astype(np.float64) - image).mean() == 0


def test_noised_latents_are_diffusers_add_noise_of_the_vae_latents(t2i_model):
    pipe = t2i_model.pipeline
    pipe.use_scheduler("ddim")
    pixels = torch.from_numpy(make_image()).permute(2, 0, 1)[None].float() / 127.5 - 1.0
    got = noised_latents(pipe, pixels, 0.5, 9, steps=10)
    gen = torch.Generator("cpu").manual_seed(9)
    clean = pipe.vae.encode(pixels).latent_dist.sample(gen) * 0.18215
    noise = torch.randn(clean.shape, generator=gen)
    sched = DDIMScheduler.from_config(pipe.scheduler.config)
    sched.set_timesteps(10)
    t = sched.timesteps[5]
    alpha = sched.alphas_cumprod[t]
    expected = alpha.sqrt() * clean + (1 - alpha).sqrt() * noise
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_batch_items_equal_single_runs(t2i_model):
    pipe = t2i_model.pipeline
    pipe.use_scheduler("euler")
    a, b = make_image(seed=1), make_image(seed=2)
    batch = img2img_batch(pipe, ["lake", "city"], [a, b], 16, 0.7, num_inference_steps=STEPS,
                          generators=[11, 12]).images
    single = img2img(pipe, "city", b, 0.7, level=16, num_inference_steps=STEPS,
                     generator=12).images[0]
    assert np.abs(batch[1].astype(int) - single).max() <= 1


def test_inpainting_model_keeps_its_masked_out_context(tiny_inpaint):
    from engine.model.checkpoint import load_model

    pipe = load_model(str(tiny_inpaint), "cpu", precision="fp32").pipeline
    image = make_image()
    mask = np.ones((64, 64), np.float32)
    mask[:, :16] = 0
    seen = []
    hook = pipe.unet.register_forward_pre_hook(
        lambda m, a, kw: seen.append(a[0].shape[1]), with_kwargs=True)
    try:
        out = img2img(pipe, "harbour", image, 0.5, level=17, num_inference_steps=4,
                      generator=3, mask=mask).images[0]
    finally:
        hook.remove()
    assert out.shape == image.shape and seen and set(seen) == {9}


@pytest.mark.parametrize("strength", [-0.1, 1.5, float("nan"), "much"])
def test_strength_outside_0_1_is_refused(t2i_model, strength):
    with pytest.raises(InputError, match="strength must be"):
        img2img(t2i_model.pipeline, "forest", make_image(), strength, level=16)


def test_masks_need_the_inpainting_model(t2i_model):
    with pytest.raises(InputError, match="inpainting"):
        img2img(t2i_model.pipeline, "forest", make_image(), 0.5, level=16,
                mask=np.ones((64, 64), np.float32))
