"""DreamBooth-LoRA domain adaptation (the paper's attn2mask-LoRA, Table 4, Fig. 6), on any UNet2DConditionModel
pipeline (Stable Diffusion 1.x/2.x/XL, the toy pipeline).

A low-rank adapter (peft ``LoraConfig``, as in diffusers' ``train_dreambooth_lora.py``) on the
U-Net's attention projections, and optionally on the text encoders', is trained with the
DDPM epsilon loss on unlabeled target-domain images and one instance prompt that names
only the domain token. The images carry no labels, so the prompt cannot name their
objects: the token ("sks") is to absorb the domain's look, while the object words, absent
from fine-tuning, keep their meaning and (as the paper's Fig. 6 finds) their attention; at
generation the target template names both ("a red circle in sks world"). Every random draw of a step comes
from generators seeded by (seed, step), so a run resumed from its checkpoint continues
exactly as an uninterrupted one. Adapters are saved by the pipeline's own ``save_lora_weights``, in
diffusers' LoRA format:

    add_lora(pipe)
    train_lora(pipe, images, "in sks world", "data/lora")
    save_lora(pipe, "models/toy-lora")
    other_pipe.load_lora_weights("models/toy-lora")  # diffusers' own loader
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from diffusers.training_utils import cast_training_params
from diffusers.utils import convert_state_dict_to_diffusers
from peft import LoraConfig, get_peft_model_state_dict, inject_adapter_in_model
from tqdm.auto import tqdm

from . import checkpoint
from .batches import batch_indices
from .conditioning import condition, predict_noise
from .latents import check_images, to_latents
from .phases import phase

UNET_TARGETS = ["to_k", "to_q", "to_v", "to_out.0"]
TEXT_TARGETS = ["q_proj", "k_proj", "v_proj", "out_proj"]
ADAPTER = "default"
DREAMBOOTH_STEPS, DREAMBOOTH_LR = 500, 1e-4  # the diffusers README example (batch 1)
SEED_STRIDE = 10**6


def text_encoders(pipe) -> list[str]:
    """The pipeline's text encoders by component name (SDXL has two)."""
    return [part for part in ("text_encoder", "text_encoder_2") if getattr(pipe, part, None) is not None]


def lora_parameters(pipe) -> dict[str, torch.nn.Parameter]:
    """The LoRA weights of the U-Net and the text encoders, by qualified name."""
    return {f"{part}.{name}": p for part in ("unet", *text_encoders(pipe))
            for name, p in getattr(pipe, part).named_parameters() if ".lora_" in name}


def _train_only_lora(pipe) -> None:
    for part in ("unet", "vae", *text_encoders(pipe)):
        if getattr(pipe, part, None) is not None:
            getattr(pipe, part).requires_grad_(False)
    for p in lora_parameters(pipe).values():
        p.requires_grad_(True)


def add_lora(pipe, rank: int = 4, alpha: float = 4, text_encoder: bool = False,
             seed: int = 0) -> None:
    """Attach LoRA (Gaussian A, zero B: the model is unchanged until trained) to the U-Net and, with
    ``text_encoder``, to every text encoder, and freeze the rest.

    LoRA weights are kept in float32 when the model is half precision, as diffusers' script does.
    """
    if not isinstance(getattr(pipe, "unet", None), torch.nn.Module):
        denoiser = type(getattr(pipe, "transformer", None)).__name__
        raise TypeError(f"DreamBooth-LoRA here trains a U-Net with the DDPM epsilon loss; {type(pipe).__name__} has "
                        f"a {denoiser} trained by flow matching: not supported (diffusers' examples/dreambooth "
                        "scripts train one for it; load it with pipe.load_lora_weights)")
    config = {"r": rank, "lora_alpha": alpha, "init_lora_weights": "gaussian"}
    texts = text_encoders(pipe) if text_encoder else []
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        pipe.unet.add_adapter(LoraConfig(**config, target_modules=UNET_TARGETS), adapter_name=ADAPTER)
        for part in texts:  # peft directly: transformers 5's add_adapter asks for peft >= 0.22
            inject_adapter_in_model(LoraConfig(**config, target_modules=TEXT_TARGETS), getattr(pipe, part), ADAPTER)
    _train_only_lora(pipe)
    cast_training_params([pipe.unet, *(getattr(pipe, part) for part in texts)], dtype=torch.float32)


def lora_loss(pipe, images: np.ndarray, prompts: list[str], generator: torch.Generator) -> torch.Tensor:
    """DDPM epsilon loss ||eps - eps_theta(sqrt(a_t) x0 + sqrt(1 - a_t) eps, t, c)||^2 of one batch."""
    x0 = to_latents(pipe, images).to(pipe.unet.dtype)
    noise = torch.randn(x0.shape, generator=generator).to(x0)
    t = torch.randint(0, pipe.scheduler.config.num_train_timesteps, (len(x0),), generator=generator).to(x0.device)
    pred = predict_noise(pipe, pipe.scheduler.add_noise(x0, noise, t), t, condition(pipe, prompts))
    return F.mse_loss(pred, noise.float())


@phase("LoRA training")
def train_lora(
    pipe,
    images: np.ndarray,
    instance_prompt: str,
    run_dir: str | Path,
    steps: int = DREAMBOOTH_STEPS,
    lr: float = DREAMBOOTH_LR,
    batch_size: int = 1,
    seed: int = 0,
    p_uncond: float = 0.0,
    ckpt_every: int = 50,
) -> list[float]:
    """Train the LoRA of ``add_lora`` on unlabeled images (N, H, W, 3) uint8; returns the losses of all steps.

    AdamW (weight decay 1e-2, gradients clipped to norm 1, constant lr, as diffusers' script) over the
    LoRA weights only. ``run_dir/checkpoint.pt`` (LoRA weights, optimiser, step, losses) is written
    atomically every ``ckpt_every`` steps and at the end; an interrupted run called again resumes
    from it, and a finished one only restores its weights.
    """
    params = lora_parameters(pipe)
    if not params:
        raise ValueError("the back-end has no LoRA: call add_lora first")
    if pipe.scheduler.config.prediction_type != "epsilon":
        raise ValueError(f"only epsilon prediction is supported, not {pipe.scheduler.config.prediction_type!r}")
    check_images(pipe, images)
    config = {"prompt": instance_prompt, "steps": steps, "lr": lr, "batch_size": batch_size, "seed": seed,
              "p_uncond": p_uncond, "lora": {k: list(p.shape) for k, p in params.items()},
              "images": hashlib.sha1(np.ascontiguousarray(images).tobytes()).hexdigest()}
    opt = torch.optim.AdamW(params.values(), lr=lr, weight_decay=1e-2)
    ckpt = Path(run_dir) / "checkpoint.pt"
    ckpt.parent.mkdir(parents=True, exist_ok=True)
    parts = {"lora": checkpoint.Tensors(params), "opt": opt}
    state = checkpoint.load(ckpt, parts, config) or {"step": 0, "losses": []}
    step, losses = state["step"], state["losses"]
    bar = tqdm(total=steps, initial=step, desc="LoRA")
    indices = batch_indices(len(images), batch_size, seed)
    while step < steps:
        x = images[indices(step)]
        drop = np.random.default_rng([seed, step, 1]).random(len(x)) < p_uncond  # prompts dropped to ""
        prompts = ["" if d else instance_prompt for d in drop]
        loss = lora_loss(pipe, x, prompts, torch.Generator().manual_seed(seed * SEED_STRIDE + step))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params.values(), 1.0)
        opt.step()
        step += 1
        losses.append(loss.item())
        bar.update(1)
        bar.set_postfix(loss=f"{losses[-1]:.4f}")
        if step % ckpt_every == 0 or step == steps:
            checkpoint.save(ckpt, parts, config, step=step, losses=losses)
    bar.close()
    return losses


def save_lora(pipe, folder: str | Path) -> None:
    """``folder/pytorch_lora_weights.safetensors`` by the pipeline's own ``save_lora_weights`` (loadable
    with ``pipe.load_lora_weights``), with each adapter's ``LoraConfig`` as metadata (keeps alpha)."""
    params, layers = lora_parameters(pipe), {}
    for part in ("unet", *text_encoders(pipe)):
        if not any(k.startswith(f"{part}.") for k in params):
            continue
        model = getattr(pipe, part)
        weights = convert_state_dict_to_diffusers(get_peft_model_state_dict(model, adapter_name=ADAPTER))
        if part != "unet" and not hasattr(model, "text_model"):  # transformers 5 flattens CLIPTextModel
            weights = {f"text_model.{k}": v for k, v in weights.items()}  # the usual key names
        layers[f"{part}_lora_layers"] = weights
        layers[f"{part}_lora_adapter_metadata"] = model.peft_config[ADAPTER].to_dict()
    type(pipe).save_lora_weights(folder, **layers)

