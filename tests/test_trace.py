"""``a2m_utils.trace`` around the user's own pipeline call: the README example on a tiny Stable
Diffusion and on the committed toy pipeline, the captured maps against a manual recomputation,
guidance on and off, and schedulers other than the pipeline's own."""

import math
from pathlib import Path

import diffusers
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import tiny_sdxl
from diffusers import DDIMScheduler, StableDiffusionPipeline
from test_generate import assert_same_up_to_rounding, first_unet_inputs

import a2m_utils as a2m
from a2m_utils.classes import ClassVocab
from a2m_utils.toy import TOY, ToyPipeline

REPO = Path(__file__).resolve().parents[1]
# Words the tiny CLIP tokenizer of conftest knows ("potted plant": two tokens, one class).
PETS = ClassVocab(names=("background", "dog", "cat", "potted plant"), synonyms={"dog": ("puppy",)})
PROMPTS = ["a photo of a dog and a cat", "a potted plant next to a puppy"]
POSITIONS = [{"dog": [5], "cat": [8]}, {"dog": [7], "potted plant": [2, 3]}]  # [BOS] = 0
SCHEDULERS = ["DDIMScheduler", "DPMSolverMultistepScheduler"]


def generators(*seeds):
    return [torch.Generator().manual_seed(s) for s in seeds]


@pytest.fixture
def sd(sd_folder):
    pipe = StableDiffusionPipeline.from_pretrained(sd_folder)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture
def toy(monkeypatch):
    monkeypatch.chdir(REPO)
    pipe = ToyPipeline.from_pretrained("models/toy-t2i")  # the committed weights, by the README's path
    pipe.set_progress_bar_config(disable=True)
    return pipe


def record_qk(unet, step):
    """Forward hooks keeping the query and key projections of every attn2 layer at denoising step ``step``
    (counting U-Net forwards), independently of the kit's capture."""
    forwards, qk = [0], {}

    def count(module, args):
        forwards[0] += 1

    def keep(name, part):
        def hook(module, args, out):
            if forwards[0] - 1 == step:
                qk.setdefault(name, {})[part] = out.detach().clone()
        return hook

    hooks = [unet.register_forward_pre_hook(count)]
    for name, mod in unet.named_modules():
        if name.endswith("attn2"):
            hooks += [mod.to_q.register_forward_hook(keep(name, "q")), mod.to_k.register_forward_hook(keep(name, "k"))]
    return qk, hooks


def manual_maps(unet, qk, size, conditional_half):
    """softmax(QK^T / sqrt(d)) per layer, mean over heads, conditional half, resized to ``size``; the mean
    over all layers and the mean over the layers of each resolution."""
    by_res = {}
    for name, d in qk.items():
        heads = unet.get_submodule(name).heads
        q = d["q"].unflatten(-1, (heads, -1)).transpose(1, 2)  # b, heads, n, d
        k = d["k"].unflatten(-1, (heads, -1)).transpose(1, 2)
        p = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1]), -1).mean(1)
        if conditional_half:
            p = p[len(p) // 2:]
        side = math.isqrt(p.shape[1])
        m = F.interpolate(p.transpose(1, 2).unflatten(2, (side, side)), size=size, mode="bilinear",
                          align_corners=False)
        by_res.setdefault((side, side), []).append(m)
    every = [m for ms in by_res.values() for m in ms]
    return sum(every) / len(every), {r: sum(ms) / len(ms) for r, ms in by_res.items()}


def check_masks(pms, vocab, positions, size):
    assert [pm.positions for pm in pms] == positions
    for pm, pos in zip(pms, positions):
        assert pm.class_ids == [vocab.index(n) for n in pos]
        assert pm.label.shape == pm.reliability.shape == size and pm.label.dtype == np.uint8
        assert set(np.unique(pm.label)) <= {0, *pm.class_ids} and pm.reliability.dtype == bool
        assert pm.maps.shape == (len(pos), *size) and np.isfinite(pm.maps).all()


def test_readme_example_on_a_tiny_stable_diffusion(sd):
    processors = {k: type(v) for k, v in sd.unet.attn_processors.items()}
    qk, hooks = record_qk(sd.unet, step=2)
    with a2m.trace(sd, steps=2) as t:
        out = sd(PROMPTS, num_inference_steps=4, generator=generators(0, 1))
    for h in hooks:
        h.remove()
    pms = t.pseudo_masks(classes=PETS)
    assert t.prompts == PROMPTS and t.steps_used == [(2, int(sd.scheduler.timesteps[2]))]
    assert t.images.shape == (2, 32, 32, 3) and t.images.dtype == np.uint8
    pil = np.stack([np.asarray(im) for im in out.images])  # what the user got, as PIL images
    assert np.abs(pil.astype(int) - t.images).max() <= 1
    check_masks(pms, PETS, POSITIONS, (32, 32))
    attn = t.attention()
    assert attn.shape == (2, 16, 16, 16) and t.resolutions == [(16, 16), (8, 8), (4, 4), (2, 2)]
    np.testing.assert_allclose(attn.sum(1), 1, atol=1e-4)
    every, by_res = manual_maps(sd.unet, qk, (16, 16), conditional_half=True)  # guided: [uncond, cond]
    assert len(qk) == len(a2m.capture.cross_attention_layers(sd.unet))
    torch.testing.assert_close(torch.from_numpy(attn), every, atol=1e-5, rtol=1e-4)
    for res in t.resolutions:
        torch.testing.assert_close(torch.from_numpy(t.attention(res)), by_res[res], atol=1e-5, rtol=1e-4)
    words, maps = t.word_maps(1)
    assert words == ["a", "potted", "plant", "next", "to", "a", "puppy"] and maps.shape == (7, 16, 16)
    # everything the trace touched is restored
    assert "encode_prompt" not in vars(sd) and "postprocess" not in vars(sd.image_processor)
    assert {k: type(v) for k, v in sd.unet.attn_processors.items()} == processors


def test_without_guidance_the_whole_batch_is_kept(sd):
    qk, hooks = record_qk(sd.unet, step=1)
    with a2m.trace(sd, steps=1) as t:
        sd(PROMPTS, num_inference_steps=2, guidance_scale=1.0, generator=generators(0, 1))
    for h in hooks:
        h.remove()
    assert t.store.guidance is False and next(iter(qk.values()))["q"].shape[0] == 2  # no unconditional half
    every, _ = manual_maps(sd.unet, qk, (16, 16), conditional_half=False)
    torch.testing.assert_close(torch.from_numpy(t.attention()), every, atol=1e-5, rtol=1e-4)
    check_masks(t.pseudo_masks(classes=PETS), PETS, POSITIONS, (32, 32))


def test_trace_needs_what_it_labels(sd):
    with a2m.trace(sd, steps=0) as t:
        sd(PROMPTS[:1], num_inference_steps=1, num_images_per_prompt=2, generator=generators(0, 1))
        with pytest.raises(a2m.TraceError, match="one pipeline call"):
            sd(PROMPTS[:1], num_inference_steps=1)
    assert t.prompts == PROMPTS[:1] * 2 and t.attention().shape[0] == 2
    with a2m.trace(sd, steps=0) as t:
        latents = sd(PROMPTS, num_inference_steps=1, output_type="latent", generator=generators(0, 1)).images
    with pytest.raises(a2m.TraceError, match="no images were seen"):
        t.pseudo_masks(classes=PETS)
    images = np.zeros((2, 32, 32, 3), np.uint8)
    check_masks(t.pseudo_masks(classes=PETS, images=images, method="argmax"), PETS, POSITIONS, (32, 32))
    assert latents.shape == (2, 4, 16, 16)
    embeds = a2m.latents.embed(sd, PROMPTS)
    with a2m.trace(sd, steps=0) as t:
        sd(prompt_embeds=embeds, num_inference_steps=1, generator=generators(0, 1))
    with pytest.raises(a2m.TraceError, match="no prompt text"):
        t.pseudo_masks(classes=PETS)
    check_masks(t.pseudo_masks(classes=PETS, prompts=PROMPTS, method="argmax"), PETS, POSITIONS, (32, 32))
    with pytest.raises(a2m.NoClassInPromptError, match="does not name"):
        t.pseudo_masks(classes=PETS, prompts=PROMPTS, expected=[["dog"], ["cat"]], method="argmax")
    kept = t.pseudo_masks(classes=PETS, prompts=["a photo of a dog", "a photo"], method="argmax", on_missing="skip")
    assert kept[1] is None and [i for i, _ in t.skipped] == [1] and kept[0].positions == {"dog": [5]}


def test_readme_example_on_the_toy_pipeline(toy):
    with a2m.trace(toy, steps=2) as t:
        out = toy("a red circle and a blue square", num_inference_steps=4, guidance_scale=2.0,
                  generator=generators(0), output_type="np")
    assert out.images.shape == (1, 32, 32, 3) and t.prompts == ["a red circle and a blue square"]
    attn = t.attention()
    assert attn.shape == (1, 24, 32, 32) and t.resolutions == [(16, 16), (8, 8)] and np.isfinite(attn).all()
    np.testing.assert_allclose(attn.sum(1), 1, atol=1e-4)
    (pm,) = t.pseudo_masks(classes=TOY, beta=0.0, r=0.6)
    check_masks([pm], TOY, [{"circle": [3], "square": [7]}], (32, 32))
    (pm,) = t.pseudo_masks(classes=TOY, attributes=("red", "blue"), method="argmax")
    assert pm.positions == {"circle": [2, 3], "square": [6, 7]}



def test_class_words_the_toy_tokenizer_loses_are_never_labelled(toy):
    """"two circles": the toy tokenizer knows no plural, so "circles" is [UNK]; a caption past 24 tokens loses
    its last class word. Neither gives a mask built from another token's map: an error, or a counted skip."""
    long = "a photo of " + ", ".join(["a red circle"] * 10)
    prompts = ["two circles", "a red circle", long]
    with a2m.trace(toy) as t:
        toy(prompts, num_inference_steps=2, guidance_scale=2.0, generator=generators(0, 1, 2))
    with pytest.raises(a2m.NoClassInPromptError, match="'two circles': the tokenizer does not know the class word "
                                                       "'circles'"):
        t.pseudo_masks(classes=TOY, method="argmax")
    kept = t.pseudo_masks(classes=TOY, method="argmax", on_missing="skip")
    assert kept[0] is None and kept[2] is None and kept[1].positions == {"circle": [3]}
    assert [i for i, _ in t.skipped] == [0, 2] and "[UNK]" in t.skipped[0][1] and "cut off" in t.skipped[1][1]

def test_toy_generate_does_not_depend_on_the_batch(toy):
    """The committed toy pipeline under its preset scheduler: an image and its maps depend on its
    seed, not on the other images of the batch (up to the float rounding of batched kernels)."""
    toy.scheduler = DDIMScheduler.from_config(toy.scheduler.config)
    prompts, seeds = ["a red circle and a blue square", "a green star", "a yellow cross"], [11, 12, 13]
    whole, noise = first_unet_inputs(toy, prompts, seeds)
    alone, noise_a = first_unet_inputs(toy, prompts[1:2], seeds[1:2])
    rest, noise_b = first_unet_inputs(toy, prompts[::2], seeds[::2])
    assert torch.equal(noise[1:2], noise_a) and torch.equal(noise[::2], noise_b)
    again = a2m.generate(toy, prompts, seeds, steps=1, num_inference_steps=3)
    assert np.array_equal(again.images, whole.images) and np.array_equal(again.attention(), whole.attention())
    assert_same_up_to_rounding(whole.images[1:2], alone.images, whole.attention()[1:2], alone.attention())
    assert_same_up_to_rounding(whole.images[::2], rest.images, whole.attention()[::2], rest.attention())


@pytest.mark.parametrize("scheduler", SCHEDULERS)
@pytest.mark.parametrize("kind", ["toy", "sd"])
def test_schedulers_under_trace(kind, scheduler, request):
    pipe = request.getfixturevalue(kind)
    pipe.scheduler = getattr(diffusers, scheduler).from_config(pipe.scheduler.config)
    prompts, vocab = (["a red circle and a blue square"], TOY) if kind == "toy" else (PROMPTS[:1], PETS)
    with a2m.trace(pipe, steps=[0, 2]) as t:
        pipe(prompts, num_inference_steps=4, guidance_scale=2.0, generator=generators(3))
    timesteps = pipe.scheduler.timesteps
    assert type(pipe.scheduler).__name__ == scheduler and len(timesteps) == 4
    assert t.steps_used == [(0, int(timesteps[0])), (2, int(timesteps[2]))]
    assert np.isfinite(t.attention()).all() and np.isfinite(t.images).all()
    np.testing.assert_allclose(t.attention().sum(1), 1, atol=1e-4)
    assert t.pseudo_masks(classes=vocab, method="argmax")[0].positions


def test_sdxl_maps_against_a_manual_recomputation(tmp_path):
    """SDXL's U-Net (two text encoders side by side, its first level without attention): the same capture."""
    pipe = tiny_sdxl(tmp_path)
    qk, hooks = record_qk(pipe.unet, step=1)
    with a2m.trace(pipe, steps=1) as t:
        pipe(PROMPTS, num_inference_steps=3, guidance_scale=5.0, generator=generators(0, 1))
    for h in hooks:
        h.remove()
    assert t.prompts == PROMPTS and t.resolutions == [(8, 8), (4, 4)]  # half and a quarter of the latent size
    assert len(qk) == len(a2m.capture.cross_attention_layers(pipe.unet))
    every, by_res = manual_maps(pipe.unet, qk, (16, 16), conditional_half=True)
    torch.testing.assert_close(torch.from_numpy(t.attention()), every, atol=1e-5, rtol=1e-4)
    for res in t.resolutions:
        torch.testing.assert_close(torch.from_numpy(t.attention(res)), by_res[res], atol=1e-5, rtol=1e-4)
    check_masks(t.pseudo_masks(classes=PETS), PETS, POSITIONS, (32, 32))
