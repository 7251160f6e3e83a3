import numpy as np
import pytest
import torch
from conftest import tiny_mmdit, tiny_sd, tiny_sdxl

import a2m_utils as a2m
from a2m_utils.nti import invert, regenerate, schedulers, unoptimised_nulls
from a2m_utils.toy.pipeline import load_toy
from a2m_utils.toy.world import make_sample

# Few steps, few inner steps and a larger learning rate than the paper's 1e-2, to run in seconds.
FAST = {"num_steps": 4, "guidance_scale": 3.0, "inner_steps": 2, "lr": 0.1}


@pytest.fixture(scope="module")
def toy():
    return load_toy()


@pytest.fixture(scope="module")
def sd(tmp_path_factory):
    return tiny_sd(tmp_path_factory.mktemp("tok"))


def test_null_text_beats_plain_ddim_inversion_on_toy(toy):
    s = make_sample(1)
    (inv,) = invert(toy, s.image[None], [s.caption], **FAST)
    assert inv.nti_error < 0.7 * inv.ddim_error, (inv.ddim_error, inv.nti_error)
    assert inv.image.shape == (32, 32, 3) and inv.image.dtype == np.uint8
    assert inv.attention.shape == (24, 32, 32)
    np.testing.assert_allclose(inv.attention.sum(0), 1, atol=1e-4)
    assert [i for i, _ in inv.steps_used] == [0, 1, 2, 3] and len(inv.null_embeddings) == 4
    assert inv.latent_T.shape == (1, 3, 32, 32)
    assert all(p.grad is None for p in toy.unet.parameters())


def test_plain_inversion_is_deterministic_and_captures_chosen_steps(toy):
    s = make_sample(2)
    (a,) = invert(toy, s.image[None], [s.caption], num_steps=4, guidance_scale=3.0, null_text=False, capture_steps=2)
    (b,) = invert(toy, s.image[None], [s.caption], num_steps=4, guidance_scale=3.0, null_text=False, capture_steps=2)
    assert a.nti_error is None and a.steps_used == [(2, 250)]
    assert np.array_equal(a.image, b.image) and np.array_equal(a.attention, b.attention)


def test_stable_diffusion_end_to_end(sd):
    image = make_sample(0).image
    (inv,) = invert(sd, image[None], ["a photo of a dog"], num_steps=2, guidance_scale=3.0, inner_steps=2)
    assert inv.image.shape == (32, 32, 3) and inv.image.dtype == np.uint8
    assert inv.attention.shape == (16, 16, 16) and inv.latent_T.shape == (1, 4, 16, 16)
    assert inv.steps_used == [(0, 501), (1, 1)]
    assert np.isfinite([inv.ddim_error, inv.nti_error]).all() and len(inv.null_embeddings) == 2


@pytest.mark.parametrize("build", [tiny_sd, tiny_sdxl], ids=["sd", "sdxl"])
def test_regeneration_is_the_pipelines_own_guided_ddim(build, tmp_path):
    """Without optimised nulls the kit's own loop draws what the pipeline's own call draws with DDIM from the same
    noise, maps included: the same conditioning (SDXL: pooled embedding, size ids, zeros for the empty prompt)."""
    pipe = build(tmp_path)
    prompts = ["a photo of a dog", "a cat next to a potted plant"]
    noise = torch.randn(2, 4, 16, 16, generator=torch.Generator().manual_seed(0))
    images, maps, used = regenerate(pipe, noise, prompts, unoptimised_nulls(pipe, prompts, 3), 3.0, capture_steps=1)
    pipe.scheduler = schedulers(pipe, 3)[0]
    with a2m.trace(pipe, steps=1) as t:
        pipe(prompts, num_inference_steps=3, guidance_scale=3.0, latents=noise, output_type="pt")
    assert used == t.steps_used
    np.testing.assert_array_equal(images, t.images)
    np.testing.assert_allclose(maps, t.attention(), rtol=0, atol=1e-6)


def test_sdxl_end_to_end(tmp_path):
    """SDXL: the null embedding is the unconditional token sequence (zeros before optimisation, as the pipeline's
    force_zeros_for_empty_prompt), one per step; its pooled embedding and size ids stay the pipeline's."""
    pipe, image = tiny_sdxl(tmp_path), make_sample(0).image
    (plain,) = invert(pipe, image[None], ["a photo of a dog"], num_steps=2, guidance_scale=3.0, null_text=False)
    assert plain.nti_error is None and all(not n.any() for n in plain.null_embeddings)
    (inv,) = invert(pipe, image[None], ["a photo of a dog"], num_steps=2, guidance_scale=3.0, inner_steps=2)
    assert inv.image.shape == (32, 32, 3) and inv.attention.shape == (16, 16, 16)
    assert inv.latent_T.shape == (1, 4, 16, 16)
    assert inv.steps_used == [(0, 501), (1, 1)] and [n.shape for n in inv.null_embeddings] == [(1, 16, 32)] * 2
    assert all(n.any() for n in inv.null_embeddings) and np.isfinite([inv.ddim_error, inv.nti_error]).all()
    assert inv.ddim_error == plain.ddim_error and torch.equal(inv.latent_T, plain.latent_T)


@pytest.mark.parametrize("arch", ["sd3", "flux"])
def test_flow_matching_pipelines_are_refused(arch, tmp_path):
    pipe = tiny_mmdit(arch, tmp_path)
    name = type(pipe).__name__
    with pytest.raises(TypeError, match=rf"^null-text inversion needs a DDIM-style scheduler and a U-Net; {name} has a "
                                        r"\w+Transformer2DModel and FlowMatchEulerDiscreteScheduler \(flow matching\): "
                                        "not supported$"):
        invert(pipe, np.zeros((1, 32, 32, 3), np.uint8), ["a photo of a dog"], num_steps=2)


def test_image_of_the_wrong_size(toy):
    with pytest.raises(ValueError, match=r"expected uint8 images \(batch, 32, 32, 3\) for this pipeline"):
        invert(toy, np.zeros((1, 64, 64, 3), np.uint8), ["a red circle"], num_steps=2)


def test_images_and_prompts_must_pair(toy):
    with pytest.raises(ValueError, match="2 images but 1 prompts"):
        invert(toy, np.zeros((2, 32, 32, 3), np.uint8), ["a red circle"], num_steps=2)


def test_a_batch_inverts_each_image_as_if_alone(toy):
    """Batched null-text optimisation matches one image at a time, up to float rounding."""
    samples = [make_sample(3), make_sample(4), make_sample(5)]
    batch = invert(toy, np.stack([s.image for s in samples]), [s.caption for s in samples], **FAST)
    for s, got in zip(samples, batch):
        (alone,) = invert(toy, s.image[None], [s.caption], **FAST)
        assert np.abs(got.image.astype(int) - alone.image).max() <= 1
        np.testing.assert_allclose(got.attention, alone.attention, atol=1e-4)
        np.testing.assert_allclose(got.nti_error, alone.nti_error, rtol=1e-3, atol=1e-7)
        for a, b in zip(got.null_embeddings, alone.null_embeddings):  # Adam amplifies rounding where grads ~ 0
            assert float((a - b).norm() / b.norm()) < 1e-3


def test_bf16_inversion_is_deterministic_close_to_fp32_and_checked(toy):
    s = make_sample(6)
    run = lambda precision: invert(toy, s.image[None], [s.caption], **FAST, precision=precision)[0]
    full, half, again = run("fp32"), run("bf16"), run("bf16")
    np.testing.assert_array_equal(half.image, again.image)
    np.testing.assert_array_equal(half.attention, again.attention)
    assert not np.array_equal(full.attention, half.attention)  # autocast did run in bf16
    assert np.abs(full.image.astype(int) - half.image).mean() < 4  # of 255
    assert np.abs(full.attention - half.attention).max() < 0.1
    assert half.nti_error < 0.7 * half.ddim_error  # the null embeddings still learn in bf16
    with pytest.raises(ValueError, match="unknown precision 'int8'"):
        run("int8")
