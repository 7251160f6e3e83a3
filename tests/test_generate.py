"""``a2m_utils.generate``: a pipeline call under ``trace`` with one seeded generator per image."""

import numpy as np
import pytest
import torch
from diffusers import DDIMScheduler

from a2m_utils import generate, load_pipeline, trace
from a2m_utils.latents import image_size
from a2m_utils.toy.pipeline import load_toy, new_toy


@pytest.fixture(scope="module")
def toy():
    """A random toy pipeline with its DDPM scheduler (each image's noise drawn from its own generator)."""
    pipe = new_toy(0)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def test_toy_same_seed_same_image_and_maps(toy):
    prompts = ["a red circle", "a blue star and a green box"]
    a = generate(toy, prompts, [1, 2], steps=3, num_inference_steps=6)
    c = generate(toy, prompts, [1, 2], steps=3, num_inference_steps=6)
    assert a.images.shape == (2, 32, 32, 3) and a.images.dtype == np.uint8
    assert a.attention().shape == (2, 24, 32, 32) and a.prompts == prompts
    assert np.array_equal(a.images, c.images) and np.array_equal(a.attention(), c.attention())
    assert [i for i, _ in a.steps_used] == [3]
    other = generate(toy, ["a red circle"], [3], steps=3, num_inference_steps=6)
    assert not np.array_equal(other.images[0], a.images[0])


def test_records_step_index_and_timestep():
    pipe = new_toy(0)
    pipe.set_progress_bar_config(disable=True)
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    g = generate(pipe, ["a red circle"], [1], steps=5, num_inference_steps=10)
    sched = DDIMScheduler.from_config(pipe.scheduler.config)
    sched.set_timesteps(10)
    assert g.steps_used == [(5, int(sched.timesteps[5]))]
    g = generate(pipe, ["a red circle"], [1], steps=None, num_inference_steps=4)
    assert [i for i, _ in g.steps_used] == [0, 1, 2, 3]
    g = generate(pipe, ["a red circle"], [1], steps=range(1, 3), num_inference_steps=4)
    assert [i for i, _ in g.steps_used] == [1, 2]


def test_stable_diffusion_path(sd_folder):
    pipe = load_pipeline(sd_folder, scheduler="DDPMScheduler")
    assert pipe.vae is not None and image_size(pipe) == 32
    prompts = ["a photo of a dog", "an aeroplane"]
    a = generate(pipe, prompts, [0, 1], steps=2, self_attention_res=8, num_inference_steps=4)
    assert a.images.shape == (2, 32, 32, 3) and a.images.dtype == np.uint8
    assert a.attention().shape == (2, 16, 16, 16)
    np.testing.assert_allclose(a.attention().sum(1), 1, atol=1e-4)
    assert a.self_attention().shape == (2, 64, 64)
    np.testing.assert_allclose(a.self_attention().sum(-1), 1, atol=1e-4)
    b = generate(pipe, prompts, [0, 1], steps=2, num_inference_steps=4)
    assert np.array_equal(a.images, b.images) and np.allclose(a.attention(), b.attention())


def test_bad_input(tmp_path, toy):
    with pytest.raises(FileNotFoundError, match="cannot load the pipeline"):
        load_pipeline(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="not a toy pipeline folder"):
        load_toy(tmp_path)
    with pytest.raises(ValueError, match="2 prompts but 1 seeds"):
        generate(toy, ["a", "b"], [1])
    with pytest.raises(ValueError, match="non-negative step indices"):
        generate(toy, ["a red circle"], [1], steps=-1, num_inference_steps=2)
    with pytest.raises(TypeError, match="has no U-Net"), trace(object()):
        pass
    never = generate(toy, ["a red circle"], [1], steps=5, num_inference_steps=2)
    assert never.steps_used == []
    with pytest.raises(RuntimeError, match="no cross-attention was captured"):
        never.attention()


def first_unet_inputs(pipe, prompts, seeds):
    """The U-Net's input at the first step of ``generate`` (the seeded noise, scaled), per image."""
    seen = []
    handle = pipe.unet.register_forward_pre_hook(lambda m, args: seen.append(args[0].clone()) if not seen else None)
    try:
        t = generate(pipe, prompts, seeds, steps=1, num_inference_steps=3)
    finally:
        handle.remove()
    return t, seen[0][len(prompts):]  # the conditional half of the guided batch


def assert_same_up_to_rounding(images, other_images, maps, other_maps):
    """Equal up to a flip of one grey level where batched CPU kernels round differently (~1e-6)."""
    diff = np.abs(images.astype(int) - other_images)
    assert diff.max() <= 1 and (diff > 0).mean() < 1e-3, (diff.max(), (diff > 0).sum())
    np.testing.assert_allclose(maps, other_maps, atol=1e-5, rtol=0)


def test_batches_do_not_change_results(toy):
    """Each image's noise comes from its own generator: a seed gives the same image whatever its batch.
    The starting noise is bit-identical; the outputs agree up to the float rounding of batched kernels
    (on the CPU a U-Net's output for one image changes by ~1e-6 with the batch size and thread split)."""
    prompts, seeds = ["a red circle", "a blue star", "a green box"], [4, 5, 6]
    whole, noise = first_unet_inputs(toy, prompts, seeds)
    first, noise_a = first_unet_inputs(toy, prompts[:2], seeds[:2])
    last, noise_b = first_unet_inputs(toy, prompts[2:], seeds[2:])
    flipped, noise_r = first_unet_inputs(toy, prompts[::-1], seeds[::-1])
    assert torch.equal(noise, torch.cat([noise_a, noise_b])) and torch.equal(noise, noise_r.flip(0))
    again = generate(toy, prompts[:2], seeds[:2], steps=1, num_inference_steps=3)
    assert np.array_equal(again.images, first.images) and np.array_equal(again.attention(), first.attention())
    assert_same_up_to_rounding(whole.images, np.concatenate([first.images, last.images]),
                               whole.attention(), np.concatenate([first.attention(), last.attention()]))
    assert_same_up_to_rounding(whole.images, flipped.images[::-1], whole.attention(), flipped.attention()[::-1])
    assert whole.resolutions == [(16, 16), (8, 8)]
    for res in whole.resolutions:
        assert whole.attention(res).shape == (3, 24, 32, 32)
        np.testing.assert_allclose(whole.attention(res), np.concatenate([first.attention(res), last.attention(res)]),
                                   atol=1e-5, rtol=0)


def test_generator_seeds_are_on_the_cpu(toy):
    """``generate``'s noise equals the user's own call with CPU generators of the same seeds."""
    prompts = ["a red circle", "a blue star"]
    g = generate(toy, prompts, [7, 8], steps=1, num_inference_steps=2)
    with trace(toy, steps=1) as t:
        out = toy(prompts, num_inference_steps=2, generator=[torch.Generator().manual_seed(s) for s in (7, 8)],
                  output_type="np")
    assert np.array_equal(t.images, g.images) and np.array_equal(t.attention(), g.attention())
    assert np.array_equal(np.round(out.images * 255).astype(np.uint8), g.images)


def test_bf16_sampling_is_deterministic_close_to_fp32_and_checked(toy):
    run = lambda precision: generate(toy, ["a red circle"] * 2, [3, 4], num_inference_steps=4, guidance_scale=2.0,
                                     precision=precision)
    full, half, again = run("fp32"), run("bf16"), run("bf16")
    np.testing.assert_array_equal(half.images, again.images)
    np.testing.assert_array_equal(half.attention(), again.attention())
    assert not np.array_equal(full.images, half.images)  # autocast did run in bf16
    assert np.abs(full.images.astype(int) - half.images).mean() < 4  # of 255
    assert np.abs(full.attention() - half.attention()).max() < 0.1
    with pytest.raises(ValueError, match="unknown precision 'int8'"):
        run("int8")
