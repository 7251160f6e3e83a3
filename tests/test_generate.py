import numpy as np
import pytest
from conftest import tiny_sd
from diffusers import DDPMScheduler, StableDiffusionPipeline

from a2m_utils.backends import load_backend, load_stable_diffusion
from a2m_utils.generate import generate
from a2m_utils.toy.pipeline import new_toy


@pytest.fixture(scope="module")
def sd_folder(tmp_path_factory):
    """A tiny randomly initialised Stable Diffusion pipeline saved in diffusers layout (no download)."""
    d = tmp_path_factory.mktemp("tiny-sd")
    (d / "tok").mkdir()
    b = tiny_sd(d / "tok")
    pipe = StableDiffusionPipeline(vae=b.vae, text_encoder=b.text_encoder, tokenizer=b.tokenizer, unet=b.unet,
                                   scheduler=b.scheduler, safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)
    pipe.save_pretrained(d / "pipe")
    return d / "pipe"


def test_toy_same_seed_same_image_and_maps():
    b = new_toy(0)
    a = generate(b, ["a red circle", "a blue star and a green box"], [1, 2], num_steps=6, capture_steps=3)
    c = generate(b, ["a red circle", "a blue star and a green box"], [1, 2], num_steps=6, capture_steps=3)
    assert a.images.shape == (2, 32, 32, 3) and a.attention.shape == (2, 24, 32, 32)
    assert np.array_equal(a.images, c.images) and np.array_equal(a.attention, c.attention)
    assert [i for i, _ in a.steps_used] == [3]
    other = generate(b, ["a red circle"], [3], num_steps=6, capture_steps=3)
    assert not np.array_equal(other.images[0], a.images[0])


def test_records_step_index_and_timestep():
    b = new_toy(0)
    g = generate(b, ["a red circle"], [1], num_steps=10, capture_steps=5, sampler_name="ddim")
    sched = DDPMScheduler.from_config(b.scheduler.config)
    sched.set_timesteps(10)
    assert g.steps_used == [(5, int(sched.timesteps[5]))]
    g = generate(b, ["a red circle"], [1], num_steps=4, capture_steps=None)
    assert [i for i, _ in g.steps_used] == [0, 1, 2, 3]


def test_stable_diffusion_path(sd_folder):
    backend = load_stable_diffusion(sd_folder)
    assert backend.vae is not None and backend.image_size == 32
    a = generate(backend, ["a photo of a dog", "an aeroplane"], [0, 1], num_steps=4, capture_steps=2,
                 self_attention_res=8)
    assert a.images.shape == (2, 32, 32, 3) and a.images.dtype == np.uint8
    assert a.attention.shape == (2, 16, 16, 16)
    np.testing.assert_allclose(a.attention.sum(1), 1, atol=1e-4)
    assert a.self_attention.shape == (2, 64, 64)
    b = generate(backend, ["a photo of a dog", "an aeroplane"], [0, 1], num_steps=4, capture_steps=2)
    assert np.array_equal(a.images, b.images) and np.allclose(a.attention, b.attention)


def test_bad_input(tmp_path):
    with pytest.raises(FileNotFoundError, match="cannot load the Stable Diffusion checkpoint"):
        load_stable_diffusion(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="not a toy model folder"):
        load_backend("toy", tmp_path)
    with pytest.raises(ValueError, match="unknown back-end"):
        load_backend("dalle")
    with pytest.raises(ValueError, match="2 prompts but 1 seeds"):
        generate(new_toy(0), ["a", "b"], [1])
    with pytest.raises(ValueError, match="unknown sampler"):
        generate(new_toy(0), ["a red circle"], [1], sampler_name="euler")


def test_batches_do_not_change_results():
    from a2m_utils.generate import generate_many

    b = new_toy(0)
    prompts, seeds = ["a red circle", "a blue star", "a green box"], [4, 5, 6]
    whole = generate(b, prompts, seeds, num_steps=3, capture_steps=1)
    parts = generate_many(b, prompts, seeds, batch_size=2, progress=False, num_steps=3, capture_steps=1)
    assert np.array_equal(whole.images, parts.images)
    np.testing.assert_allclose(whole.attention, parts.attention, atol=1e-6)
    assert sorted(parts.by_resolution) == [(8, 8), (16, 16)] and parts.by_resolution[(16, 16)].shape[0] == 3
