import numpy as np
import pytest
import torch
from diffusers import AutoencoderKL
from peft.tuners.lora import LoraLayer
from safetensors import safe_open
from test_attention import inputs, manual_cross_attention

from a2m_utils.toy import world as toyworld
from a2m_utils.capture import capture_attention
from a2m_utils.backends import Backend
from a2m_utils.generate import generate
from a2m_utils.lora import (
    TOY_INSTANCE_PROMPT,
    add_lora,
    load_lora,
    lora_parameters,
    save_lora,
    train_lora,
)
from a2m_utils.sd import TINY_SD_UNET_CONFIG, TINY_VAE_CONFIG, sd_unet
from a2m_utils.toy.pipeline import (
    build_scheduler,
    build_text_encoder,
    build_tokenizer,
    build_unet,
)

KINDS = ["toy", "vae"]  # pixel-space toy layout; latent SD layout with a tiny VAE


def tiny_backend(kind: str) -> Backend:
    """Random weights, the same for the same kind; 32x32 images."""
    torch.manual_seed(0)
    tok = build_tokenizer()
    vae = None
    if kind == "toy":
        unet = build_unet(channels=(8, 16, 16), context_dim=16)
    else:
        unet = sd_unet(TINY_SD_UNET_CONFIG)
        vae = AutoencoderKL(**TINY_VAE_CONFIG)
    return Backend(unet.eval(), build_text_encoder(len(tok), width=16).eval(), tok, build_scheduler(), vae, name=kind)


def target_images(n: int = 3) -> np.ndarray:
    return np.stack([toyworld.make_sample(s, domain="target").image for s in range(n)])


def randomise_lora_b(backend: Backend, seed: int = 0) -> None:
    """Non-zero LoRA updates (B starts at zero)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in lora_parameters(backend).items():
            if ".lora_B." in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.5)


def full_state(backend: Backend) -> dict[str, torch.Tensor]:
    parts = {"unet": backend.unet, "text_encoder": backend.text_encoder, "vae": backend.vae}
    return {f"{part}.{k}": v.clone() for part, m in parts.items() if m is not None for k, v in m.state_dict().items()}


@pytest.mark.parametrize("kind", KINDS)
def test_training_changes_only_lora(kind, tmp_path):
    backend = tiny_backend(kind)
    x, ctx = inputs(backend.unet)
    with torch.no_grad():
        base = backend.unet(x, 10, ctx).sample
        add_lora(backend, text_encoder=True)
        torch.testing.assert_close(backend.unet(x, 10, ctx).sample, base, rtol=0, atol=0)  # B = 0
    lora = lora_parameters(backend)
    assert {n.split(".")[0] for n in lora} == {"unet", "text_encoder"}
    assert all(p.requires_grad == (f"{part}.{n}" in lora) for part in ("unet", "text_encoder")
               for n, p in getattr(backend, part).named_parameters())
    before = full_state(backend)
    losses = train_lora(backend, target_images(), TOY_INSTANCE_PROMPT, tmp_path, steps=2, batch_size=2, lr=1e-2)
    assert len(losses) == 2 and all(np.isfinite(losses))
    after = full_state(backend)
    lora_keys = {k for k in before if ".lora_" in k}
    assert lora_keys == set(lora)
    for k in before:
        assert torch.equal(before[k], after[k]) != (k in lora_keys), k


@pytest.mark.parametrize("kind", KINDS)
def test_capture_sees_the_adapted_attention(kind):
    backend = tiny_backend(kind)
    unet = backend.unet
    add_lora(backend)
    x, ctx = inputs(unet)
    with torch.no_grad(), capture_attention(unet, guidance=False) as store:
        unet(x, 10, ctx)
    unadapted = store.cross_attention()
    randomise_lora_b(backend)
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
def test_save_and_load_into_a_fresh_backend(kind, tmp_path):
    backend = tiny_backend(kind)
    add_lora(backend, rank=2, alpha=8, text_encoder=True)  # alpha != rank: the scale must survive
    randomise_lora_b(backend)
    save_lora(backend, tmp_path)
    with safe_open(str(tmp_path / "pytorch_lora_weights.safetensors"), "pt") as f:
        assert {k.split(".")[0] for k in f.keys()} == {"unet", "text_encoder"}  # noqa: SIM118 (safe_open is not iterable)
    fresh = tiny_backend(kind)
    load_lora(fresh, tmp_path)
    theirs = lora_parameters(fresh)
    assert theirs.keys() == lora_parameters(backend).keys()
    assert all(torch.equal(p, theirs[k]) for k, p in lora_parameters(backend).items())
    assert fresh.unet.peft_config["default"].lora_alpha == fresh.text_encoder.peft_config["default"].lora_alpha == 8
    words = ["a picture in sks world"]
    torch.testing.assert_close(fresh.encode(words), backend.encode(words), rtol=0, atol=0)
    assert not torch.allclose(tiny_backend(kind).encode(words), backend.encode(words), atol=1e-4)
    prompts, seeds = ["a picture of a red circle in sks world", "a blue star"], [0, 1]
    want = generate(backend, prompts, seeds, num_steps=3, capture_steps=1)
    got = generate(fresh, prompts, seeds, num_steps=3, capture_steps=1)
    np.testing.assert_array_equal(got.images, want.images)
    np.testing.assert_array_equal(got.attention, want.attention)
    base = generate(tiny_backend(kind), prompts, seeds, num_steps=3, capture_steps=1)
    assert not np.allclose(base.attention, want.attention, atol=1e-4)


def test_resume_after_an_interruption_equals_an_uninterrupted_run(tmp_path):
    images = target_images()
    settings = {"steps": 4, "batch_size": 2, "lr": 1e-2, "seed": 3, "p_uncond": 0.5, "ckpt_every": 2}

    def run(folder, backend=None):
        backend = backend or tiny_backend("toy")
        if not lora_parameters(backend):
            add_lora(backend, text_encoder=True, seed=1)
        return backend, train_lora(backend, images, TOY_INSTANCE_PROMPT, tmp_path / folder, **settings)

    straight, straight_losses = run("a")
    crashing = tiny_backend("toy")
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
    with pytest.raises(ValueError, match=r"\['images'\] differ"):
        train_lora(resumed, images[:2], TOY_INSTANCE_PROMPT, tmp_path / "b",
                   **settings)


def test_bad_input(tmp_path):
    backend = tiny_backend("toy")
    with pytest.raises(ValueError, match="add_lora first"):
        train_lora(backend, target_images(), TOY_INSTANCE_PROMPT, tmp_path)
    add_lora(backend)
    with pytest.raises(ValueError, match="uint8 images"):
        train_lora(backend, target_images()[:, :16], TOY_INSTANCE_PROMPT, tmp_path)


def test_cached_adaptation_is_keyed_by_the_base_weights_not_their_path(tmp_path):
    """A model retrained in place must not reuse a LoRA trained on the old weights."""
    from a2m_utils.backends import load_toy
    from a2m_utils.study.experiments import adapted_backend

    images = np.stack([toyworld.make_sample(i).image for i in range(2)])
    kw = {"images": images, "steps": 1, "lr": 1e-3, "batch_size": 2, "root": tmp_path / "data"}
    model = load_toy()
    model.save(tmp_path / "model")
    _, first = adapted_backend("toy", str(tmp_path / "model"), **kw)
    assert adapted_backend("toy", str(tmp_path / "model"), **kw)[1] == first  # same weights: reused
    with torch.no_grad():
        next(model.unet.parameters()).add_(1e-3)
    model.save(tmp_path / "model")
    assert adapted_backend("toy", str(tmp_path / "model"), **kw)[1] != first
