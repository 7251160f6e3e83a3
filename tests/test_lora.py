import numpy as np
import pytest
import torch
from conftest import tiny_mmdit, tiny_sd, tiny_sdxl
from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline
from peft.tuners.lora import LoraLayer
from safetensors import safe_open
from test_attention import inputs, manual_cross_attention

from a2m_utils import generate
from a2m_utils.capture import capture_attention
from a2m_utils.identity import model_identity
from a2m_utils.latents import embed
from a2m_utils.lora import (
    add_lora,
    lora_parameters,
    save_lora,
    train_lora,
)
from a2m_utils.sd import TINY_SD_UNET_CONFIG, TINY_VAE_CONFIG, sd_unet
from a2m_utils.toy import world as toyworld
from a2m_utils.toy.pipeline import (
    ToyPipeline,
    build_scheduler,
    build_text_encoder,
    build_tokenizer,
    build_unet,
)
from a2m_utils.toy.world import INSTANCE_PROMPT

KINDS = ["toy", "vae"]  # pixel-space toy layout; latent SD layout with a tiny VAE


def tiny_pipe(kind: str):
    """Random weights, the same for the same kind; 32x32 images. "toy": a ``ToyPipeline``;
    "vae": a ``StableDiffusionPipeline`` (tiny SD U-Net and VAE, the toy text encoder and tokenizer)."""
    torch.manual_seed(0)
    tok = build_tokenizer()
    if kind == "toy":
        pipe = ToyPipeline(build_unet(channels=(8, 16, 16), context_dim=16).eval(),
                           build_text_encoder(len(tok), width=16).eval(), tok, build_scheduler())
    else:
        unet = sd_unet(TINY_SD_UNET_CONFIG)
        vae = AutoencoderKL(**TINY_VAE_CONFIG)
        pipe = StableDiffusionPipeline(vae.eval(), build_text_encoder(len(tok), width=16).eval(), tok, unet.eval(),
                                       build_scheduler(), safety_checker=None, feature_extractor=None,
                                       requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def target_images(n: int = 3) -> np.ndarray:
    return np.stack([toyworld.make_sample(s, domain="target").image for s in range(n)])


def randomise_lora_b(pipe, seed: int = 0) -> None:
    """Non-zero LoRA updates (B starts at zero)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in lora_parameters(pipe).items():
            if ".lora_B." in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.5)


def full_state(pipe) -> dict[str, torch.Tensor]:
    parts = {"unet": pipe.unet, "text_encoder": pipe.text_encoder, "vae": getattr(pipe, "vae", None)}
    return {f"{part}.{k}": v.clone() for part, m in parts.items() if m is not None for k, v in m.state_dict().items()}


def by_layer(params: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """LoRA weights keyed without their adapter name (the kit's "default", diffusers' loader "default_0")."""
    return {k.rsplit(".", 2)[0] + ".weight": v for k, v in params.items()}


@pytest.mark.parametrize("kind", KINDS)
def test_training_changes_only_lora(kind, tmp_path):
    pipe = tiny_pipe(kind)
    x, ctx = inputs(pipe.unet)
    with torch.no_grad():
        base = pipe.unet(x, 10, ctx).sample
        add_lora(pipe, text_encoder=True)
        torch.testing.assert_close(pipe.unet(x, 10, ctx).sample, base, rtol=0, atol=0)  # B = 0
    lora = lora_parameters(pipe)
    assert {n.split(".")[0] for n in lora} == {"unet", "text_encoder"}
    assert all(p.requires_grad == (f"{part}.{n}" in lora) for part in ("unet", "text_encoder")
               for n, p in getattr(pipe, part).named_parameters())
    before = full_state(pipe)
    losses = train_lora(pipe, target_images(), INSTANCE_PROMPT, tmp_path, steps=2, batch_size=2, lr=1e-2)
    assert len(losses) == 2 and all(np.isfinite(losses))
    after = full_state(pipe)
    lora_keys = {k for k in before if ".lora_" in k}
    assert lora_keys == set(lora)
    for k in before:
        assert torch.equal(before[k], after[k]) != (k in lora_keys), k


@pytest.mark.parametrize("kind", KINDS)
def test_capture_sees_the_adapted_attention(kind):
    pipe = tiny_pipe(kind)
    unet = pipe.unet
    add_lora(pipe)
    x, ctx = inputs(unet)
    with torch.no_grad(), capture_attention(unet, guidance=False) as store:
        unet(x, 10, ctx)
    unadapted = store.cross_attention()
    randomise_lora_b(pipe)
    attn2 = [m for n, m in unet.named_modules() if n.endswith("attn2")]
    assert all(isinstance(m.to_q, LoraLayer) and isinstance(m.to_k, LoraLayer) for m in attn2)
    with torch.no_grad():  # the projections manual_cross_attention hooks include the LoRA update
        q_in = torch.randn(2, 5, attn2[0].to_q.in_features)
        assert not torch.allclose(attn2[0].to_q(q_in), attn2[0].to_q.base_layer(q_in))
    with torch.no_grad(), capture_attention(unet, guidance=False) as store:
        unet(x, 10, ctx)
    adapted = store.cross_attention()
    assert not torch.allclose(adapted, unadapted, atol=1e-3)
    torch.testing.assert_close(adapted, manual_cross_attention(unet, x, 10, ctx), atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("kind", KINDS)
def test_save_and_load_into_a_fresh_pipeline(kind, tmp_path):
    pipe = tiny_pipe(kind)
    add_lora(pipe, rank=2, alpha=8, text_encoder=True)  # alpha != rank: the scale must survive
    randomise_lora_b(pipe)
    save_lora(pipe, tmp_path)
    with safe_open(str(tmp_path / "pytorch_lora_weights.safetensors"), "pt") as f:
        assert {k.split(".")[0] for k in f.keys()} == {"unet", "text_encoder"}  # noqa: SIM118 (safe_open is not iterable)
    fresh = tiny_pipe(kind)
    fresh.load_lora_weights(tmp_path)  # diffusers' own loader
    theirs, mine = by_layer(lora_parameters(fresh)), by_layer(lora_parameters(pipe))
    assert theirs.keys() == mine.keys() and len(theirs) == len(lora_parameters(pipe))
    assert all(torch.equal(p, theirs[k]) for k, p in mine.items())
    for model in (fresh.unet, fresh.text_encoder):
        (config,) = model.peft_config.values()
        assert config.lora_alpha == 8 and config.r == 2
    words = ["a picture in sks world"]
    with torch.no_grad():
        torch.testing.assert_close(embed(fresh, words), embed(pipe, words), rtol=0, atol=0)
        assert not torch.allclose(embed(tiny_pipe(kind), words), embed(pipe, words), atol=1e-4)
    prompts, seeds = ["a picture of a red circle in sks world", "a blue star"], [0, 1]
    want = generate(pipe, prompts, seeds, steps=1, num_inference_steps=3)
    got = generate(fresh, prompts, seeds, steps=1, num_inference_steps=3)
    # the same weights through diffusers' and peft's LoRA layers: equal up to float rounding
    assert np.abs(got.images.astype(int) - want.images).max() <= 1 and (got.images != want.images).mean() < 1e-3
    np.testing.assert_allclose(got.attention(), want.attention(), rtol=0, atol=1e-5)
    base = generate(tiny_pipe(kind), prompts, seeds, steps=1, num_inference_steps=3)
    assert not np.allclose(base.attention(), want.attention(), atol=1e-4)


@pytest.mark.parametrize("kind", [*KINDS, "sd", "sdxl"])
def test_a_trained_lora_loads_with_diffusers_and_draws_the_same_images(kind, tmp_path):
    """add_lora + train_lora + save_lora, then ``load_lora_weights`` into a fresh pipeline: same images and maps.
    "sd", "sdxl": conftest's tiny Stable Diffusion (XL: both text encoders adapted) with CLIP's tokenizer."""
    def build():
        if kind not in ("sd", "sdxl"):
            return tiny_pipe(kind)
        (tmp_path / "tok").mkdir(exist_ok=True)
        return (tiny_sd if kind == "sd" else tiny_sdxl)(tmp_path / "tok")

    pipe = build()
    add_lora(pipe, rank=4, alpha=4, text_encoder=True, seed=1)
    train_lora(pipe, target_images(), INSTANCE_PROMPT, tmp_path / "run", steps=3, batch_size=2, lr=1e-2, seed=2)
    untrained = {k for k, p in lora_parameters(pipe).items() if ".lora_B." in k and not p.abs().sum()}
    last = "text_encoder.encoder.layers.1."  # SDXL reads its first text encoder's penultimate layer: no gradient here
    assert untrained == {k for k in lora_parameters(pipe) if kind == "sdxl" and k.startswith(last) and ".lora_B." in k}
    save_lora(pipe, tmp_path / "lora")
    parts = {"unet", "text_encoder", *(["text_encoder_2"] if kind == "sdxl" else [])}
    assert {k.split(".")[0] for k in lora_parameters(pipe)} == parts
    with safe_open(str(tmp_path / "lora" / "pytorch_lora_weights.safetensors"), "pt") as f:
        assert {k.split(".")[0] for k in f.keys()} == parts  # noqa: SIM118 (safe_open is not iterable)
    fresh = build()
    fresh.load_lora_weights(tmp_path / "lora")
    assert model_identity(fresh) != model_identity(build())
    prompts, seeds = ["a photo of a dog in sks world", "a red circle"], [5, 6]
    for p in (pipe, fresh):
        p.scheduler = DDIMScheduler.from_config(p.scheduler.config)
    want = generate(pipe, prompts, seeds, steps=1, num_inference_steps=3, guidance_scale=3.0)
    got = generate(fresh, prompts, seeds, steps=1, num_inference_steps=3, guidance_scale=3.0)
    # the same weights through diffusers' loader: equal up to float rounding (one grey level, rarely)
    diff = np.abs(got.images.astype(int) - want.images.astype(int))
    assert diff.max() <= 1 and (diff > 0).mean() < 1e-3
    np.testing.assert_allclose(got.attention(), want.attention(), rtol=0, atol=1e-5)
    plain = build()
    plain.scheduler = DDIMScheduler.from_config(plain.scheduler.config)
    base = generate(plain, prompts, seeds, steps=1, num_inference_steps=3, guidance_scale=3.0)
    assert not np.array_equal(base.images, want.images)


def test_resume_after_an_interruption_equals_an_uninterrupted_run(tmp_path):
    images = target_images()
    settings = {"steps": 4, "batch_size": 2, "lr": 1e-2, "seed": 3, "p_uncond": 0.5, "ckpt_every": 2}

    def run(folder, pipe=None):
        pipe = pipe or tiny_pipe("toy")
        if not lora_parameters(pipe):
            add_lora(pipe, text_encoder=True, seed=1)
        return pipe, train_lora(pipe, images, INSTANCE_PROMPT, tmp_path / folder, **settings)

    straight, straight_losses = run("a")
    crashing = tiny_pipe("toy")
    calls = []

    def crash_at_step_3(module, args):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt

    handle = crashing.unet.register_forward_pre_hook(crash_at_step_3)
    add_lora(crashing, text_encoder=True, seed=1)
    with pytest.raises(KeyboardInterrupt):
        run("b", crashing)
    handle.remove()
    assert torch.load(tmp_path / "b" / "checkpoint.pt", weights_only=True)["step"] == 2
    resumed, losses = run("b")
    assert losses == straight_losses and len(losses) == 4
    mine = lora_parameters(resumed)
    assert all(torch.equal(p, mine[k]) for k, p in lora_parameters(straight).items())
    assert not list((tmp_path / "b").glob("*.tmp"))
    with pytest.raises(ValueError, match=r"\(images differ\)"):
        train_lora(resumed, images[:2], INSTANCE_PROMPT, tmp_path / "b",
                   **settings)


def test_bad_input(tmp_path):
    pipe = tiny_pipe("toy")
    with pytest.raises(ValueError, match="add_lora first"):
        train_lora(pipe, target_images(), INSTANCE_PROMPT, tmp_path)
    add_lora(pipe)
    with pytest.raises(ValueError, match="uint8 images"):
        train_lora(pipe, target_images()[:, :16], INSTANCE_PROMPT, tmp_path)


@pytest.mark.parametrize("arch", ["sd3", "flux"])
def test_flow_matching_pipelines_are_refused(arch, tmp_path):
    pipe = tiny_mmdit(arch, tmp_path)
    with pytest.raises(TypeError, match=rf"^DreamBooth-LoRA here trains a U-Net with the DDPM epsilon loss; "
                                        rf"{type(pipe).__name__} has a \w+Transformer2DModel trained by flow matching: "
                                        r"not supported \(.*load_lora_weights\)$"):
        add_lora(pipe)
    assert not any(".lora_" in n for n, _ in pipe.transformer.named_parameters())  # refused before any change


def test_cached_adaptation_is_keyed_by_the_base_weights_not_their_path(tmp_path):
    """A model retrained in place must not reuse a LoRA trained on the old weights."""
    from a2m_utils.study.combination import Study
    from a2m_utils.study.experiments import adapted_pipeline
    from a2m_utils.toy.pipeline import load_toy

    images = np.stack([toyworld.make_sample(i).image for i in range(2)])
    kw = {"images": images, "instance_prompt": "in sks world", "steps": 1, "lr": 1e-3, "batch_size": 2,
          "root": tmp_path / "data"}
    study = lambda: Study(model=str(tmp_path / "model"), device="cpu")
    model = load_toy()
    model.save_pretrained(tmp_path / "model")
    first = adapted_pipeline(study(), **kw)
    assert lora_parameters(first) and model_identity(first) != model_identity(load_toy(tmp_path / "model"))
    runs = sorted((tmp_path / "data").glob("lora-*"))
    assert len(runs) == 1 and (runs[0] / "lora" / "pytorch_lora_weights.safetensors").is_file()
    again = adapted_pipeline(study(), **kw)  # same weights: the run is reused
    assert sorted((tmp_path / "data").glob("lora-*")) == runs and model_identity(again) == model_identity(first)
    with torch.no_grad():  # retrained in place: every weight differs
        for p in model.unet.parameters():
            p.add_(1e-3)
    model.save_pretrained(tmp_path / "model")
    adapted_pipeline(study(), **kw)
    assert len(list((tmp_path / "data").glob("lora-*"))) == 2
