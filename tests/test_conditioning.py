"""The conditioning the kit's own loops (null-text inversion, LoRA) give the U-Net is what the pipeline's own
call gives it: token embeddings, and on SDXL the pooled embedding and size ids (added_cond_kwargs)."""

import pytest
import torch
from conftest import tiny_sd, tiny_sdxl
from diffusers import StableDiffusionXLPipeline

from a2m_utils.conditioning import condition, guidance_pair, predict_noise

PROMPTS = ["a photo of a dog and a cat", "a potted plant next to a puppy"]


@pytest.fixture(params=["sd", "sdxl"])
def pipe(request, tmp_path):
    return (tiny_sd if request.param == "sd" else tiny_sdxl)(tmp_path)


def first_unet_call(pipe, **kwargs) -> dict:
    """The keyword arguments (and the latent) of the U-Net's first forward in ``pipe(PROMPTS, ...)``."""
    seen = {}

    def keep(module, args, kw):
        if not seen:
            seen.update(kw, sample=args[0], timestep=args[1])

    handle = pipe.unet.register_forward_pre_hook(keep, with_kwargs=True)
    pipe(PROMPTS, num_inference_steps=1, output_type="latent", generator=torch.Generator().manual_seed(0), **kwargs)
    handle.remove()
    return seen


def test_guided_pair_is_what_the_pipeline_feeds_its_unet(pipe):
    seen = first_unet_call(pipe, guidance_scale=3.0)
    cond, uncond = guidance_pair(pipe, PROMPTS)
    both = uncond.cat(cond)  # diffusers' order under guidance: [unconditional, conditional]
    torch.testing.assert_close(both.embeds, seen["encoder_hidden_states"], rtol=0, atol=0)
    added = seen.get("added_cond_kwargs") or {}
    xl = isinstance(pipe, StableDiffusionXLPipeline)
    assert both.added.keys() == added.keys() == ({"text_embeds", "time_ids"} if xl else set())
    for key, value in both.added.items():
        torch.testing.assert_close(value, added[key], rtol=0, atol=0)
    with torch.no_grad():
        eps = predict_noise(pipe, seen["sample"], seen["timestep"], both)
        own = pipe.unet(seen["sample"], seen["timestep"], seen["encoder_hidden_states"],
                        added_cond_kwargs=seen.get("added_cond_kwargs")).sample
    torch.testing.assert_close(eps, own, rtol=0, atol=0)


def test_unguided_conditioning_is_what_the_pipeline_feeds_its_unet(pipe):
    seen = first_unet_call(pipe, guidance_scale=1.0)
    cond = condition(pipe, PROMPTS)
    torch.testing.assert_close(cond.embeds, seen["encoder_hidden_states"], rtol=0, atol=0)
    for key, value in cond.added.items():
        torch.testing.assert_close(value, seen["added_cond_kwargs"][key], rtol=0, atol=0)


def test_sdxl_guides_with_zeros_for_the_empty_prompt(tmp_path):
    """SDXL base's force_zeros_for_empty_prompt: its unconditional embeddings are zeros, the size ids the image's."""
    pipe = tiny_sdxl(tmp_path)
    _, uncond = guidance_pair(pipe, PROMPTS)
    assert not uncond.embeds.any() and not uncond.added["text_embeds"].any()
    assert uncond.added["time_ids"].tolist() == [[32, 32, 0, 0, 32, 32]] * 2  # original size, crop corner, target
