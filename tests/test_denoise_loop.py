"""The one denoising loop (engine.model.denoise): against diffusers' own StableDiffusionPipeline
latents, and its hooks in the order and number the timesteps say (the UNet counted by a
forward hook on the UNet itself, not by our code)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from diffusers import DDIMScheduler, EulerDiscreteScheduler, StableDiffusionPipeline

from engine.errors import GenerationCancelled
from engine.model.denoise import ModelInput, denoise, guided
from engine.model.img2img import img2img_batch, kept_steps
from engine.model.latents import LATENT_DTYPE

STEPS = 3
SIZE = 64
SCHEDULERS = {"euler": EulerDiscreteScheduler, "ddim": DDIMScheduler}


@pytest.fixture(scope="module")
def sd2(tiny_sd2):
    from engine.model.checkpoint import load_model

    return load_model(str(tiny_sd2), "cpu", precision="fp32").pipeline


def our_latents(pipe, prompt: str, seed: int, width: int = SIZE, **hooks) -> torch.Tensor:
    embeds, labels = pipe.condition(prompt, None, 17, 4.0)
    pipe.scheduler.set_timesteps(STEPS)
    gen = torch.Generator("cpu").manual_seed(seed)
    latents = pipe.prepare_latents(1, pipe.num_channels_latents, SIZE, width, LATENT_DTYPE,
                                   "cpu", gen)
    with torch.no_grad():
        return denoise(pipe, latents, pipe.scheduler.timesteps,
                       hooks.pop("predict", None) or guided(pipe, embeds, labels, 4.0),
                       step_kwargs=pipe.prepare_extra_step_kwargs(gen, 0.0), **hooks)


@pytest.mark.parametrize("scheduler", sorted(SCHEDULERS))
def test_text_to_image_latents_equal_diffusers_bit_for_bit_fp32(sd2, scheduler):
    """A plain SD2 checkpoint (no level input): the loop's final latents are exactly those of
    diffusers' StableDiffusionPipeline (output_type="latent"), not just close."""
    sd2.use_scheduler(scheduler)
    ref = StableDiffusionPipeline(
        vae=sd2.vae, text_encoder=sd2.text_encoder, tokenizer=sd2.tokenizer, unet=sd2.unet,
        scheduler=SCHEDULERS[scheduler].from_config(sd2.scheduler.config), safety_checker=None,
        feature_extractor=None, requires_safety_checker=False)
    ref.set_progress_bar_config(disable=True)
    expected = ref("a river delta", height=SIZE, width=SIZE, num_inference_steps=STEPS,
                   guidance_scale=4.0, generator=torch.Generator("cpu").manual_seed(11),
                   output_type="latent").images
    got = our_latents(sd2, "a river delta", 11)
    assert got.dtype == torch.float32 and got.shape == expected.shape
    assert torch.equal(got, expected)


def test_hooks_run_in_order_once_per_step_and_chain_their_results(sd2):
    sd2.use_scheduler("euler")
    events = []
    seen_latents = []
    predict = guided(sd2, *sd2.condition("farmland", None, 17, 4.0), 4.0)

    def before_step(i, t, latents):
        events.append(("before", i))
        seen_latents.append(latents)
        return ModelInput(latents)

    def counting_predict(x, t):
        events.append(("predict", int(t)))
        return predict(x, t)

    def after_step(i, t, latents):
        events.append(("after", i))
        return latents + 0.0  # a new tensor: what the callback and the next step must get

    returned = []

    def callback(pipe, i, t, tensors):
        events.append(("callback", i, tensors["tile"]))
        returned.append(tensors["latents"])
        return tensors

    final = our_latents(sd2, "farmland", 3, predict=counting_predict, before_step=before_step,
                        after_step=after_step, callback=callback, callback_tensors={"tile": 1})
    timesteps = [int(t) for t in sd2.scheduler.timesteps]
    assert len(timesteps) == STEPS
    assert events == [e for i, t in enumerate(timesteps)
                      for e in (("before", i), ("predict", t), ("after", i), ("callback", i, 1))]
    # Each step starts from what the previous step's callback saw, and the loop returns it.
    assert all(a is b for a, b in zip(returned[:-1], seen_latents[1:], strict=True))
    assert final is returned[-1]


def test_cancel_stops_after_the_step_it_was_asked_in(sd2):
    sd2.use_scheduler("ddim")
    calls = []
    hook = sd2.unet.register_forward_pre_hook(lambda m, a: calls.append(1))

    def cancel_at_2(pipe, i, t, tensors):
        if i == 1:
            pipe.cancel()
        return tensors

    sd2.begin_run()
    try:
        with pytest.raises(GenerationCancelled, match=f"step 2 of {STEPS}"):
            our_latents(sd2, "farmland", 3, callback=cancel_at_2)
    finally:
        hook.remove()
        sd2.begin_run()
    assert len(calls) == 2


def test_a_canvas_predictor_of_disjoint_windows_equals_the_windows_run_alone(sd2):
    """The joint-denoising shape: ``predict`` returns a canvas-sized noise assembled from
    windows, one scheduler step on the canvas. With two windows side by side and no overlap,
    each half of the canvas is exactly its window run alone (the steps are elementwise)."""
    sd2.use_scheduler("euler")
    embeds, labels = sd2.condition("farmland", None, 17, 4.0)
    lt = SIZE // sd2.vae_scale_factor
    predict = guided(sd2, embeds, labels, 4.0)

    def canvas_noise(x, t):
        halves = [predict(ModelInput(x.latents[..., c : c + lt]), t) for c in (0, lt)]
        return torch.cat(halves, dim=3)

    canvas = our_latents(sd2, "farmland", 5, width=2 * SIZE, predict=canvas_noise)
    gen = torch.Generator("cpu").manual_seed(5)
    sd2.scheduler.set_timesteps(STEPS)
    start = sd2.prepare_latents(1, sd2.num_channels_latents, SIZE, 2 * SIZE, LATENT_DTYPE,
                                "cpu", gen)
    for c in (0, lt):
        sd2.scheduler.set_timesteps(STEPS)
        with torch.no_grad():
            alone = denoise(sd2, start[..., c : c + lt].contiguous(), sd2.scheduler.timesteps,
                            predict)
        assert torch.equal(canvas[..., c : c + lt], alone)


@pytest.mark.parametrize("strength", [0.4, 1.0])
def test_img2img_runs_the_steps_strength_keeps_with_a_4_channel_input(t2i_model, strength):
    pipe = t2i_model.pipeline
    pipe.use_scheduler("euler")
    shapes = []
    hook = pipe.unet.register_forward_pre_hook(lambda m, a: shapes.append(tuple(a[0].shape)))
    image = np.random.default_rng(1).integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)
    try:
        img2img_batch(pipe, ["lake", "town"], [image, image], 17, strength,
                      num_inference_steps=5, generators=[1, 2])
    finally:
        hook.remove()
    assert kept_steps(5, strength) == int(5 * strength)
    assert shapes == [(4, 4, SIZE // 8, SIZE // 8)] * int(5 * strength)


def test_inpainting_feeds_the_mask_and_masked_image_channels_every_step(tiny_inpaint):
    """The 9-channel input: latents, the mask at latent size (1 = regenerate, kept as it
    is), the masked image's latents; the same extra channels at every step."""
    from engine.model.checkpoint import load_model

    pipe = load_model(str(tiny_inpaint), "cpu", precision="fp32").pipeline
    pipe.use_scheduler("ddim")
    inputs = []
    hook = pipe.unet.register_forward_pre_hook(lambda m, a: inputs.append(a[0].clone()))
    image = np.random.default_rng(2).integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)
    mask = np.zeros((SIZE, SIZE), np.float32)
    mask[:, SIZE // 2:] = 0.75  # soft: must reach the UNet unbinarized
    try:
        pipe("a lake", image, mask, level=16, num_inference_steps=STEPS,
             generator=torch.Generator("cpu").manual_seed(0))
    finally:
        hook.remove()
    assert len(inputs) == STEPS
    lt = SIZE // 8
    for x in inputs:
        assert x.shape == (2, 9, lt, lt)  # both guidance branches
        channel = x[:, 4]
        assert torch.all(channel[..., : lt // 2] == 0) and torch.all(channel[..., lt // 2:] == 0.75)
        assert torch.equal(x[:, 4:], inputs[0][:, 4:])
