"""Time and GPU memory of the Stable Diffusion path at the paper's settings, with random weights.

The models have Stable Diffusion 1.4's configuration (U-Net, VAE, a 12-layer CLIP ViT-L text
encoder) and random weights: the compute is that of the real checkpoint, which cannot be
downloaded here. Measured in one run: dataset generation (512x512, 100 DDPM steps, guidance
7.5, maps of step 50) at several batch sizes, and null-text inversion (50 DDIM steps, 10 inner
steps), as seconds per image and peak allocated GPU memory.

    python benchmarks/sd_gpu_cost.py [--device cuda] [--batch-sizes 1 4 8] [--nti-batch-sizes 1 4]
    python benchmarks/sd_gpu_cost.py --device cpu --tiny   # a check of the script itself
"""

from __future__ import annotations

import argparse
import time
from functools import partial

import numpy as np
import torch
from diffusers import AutoencoderKL, DDPMScheduler
from transformers import CLIPTextConfig, CLIPTextModel

from a2m_utils.backends import Backend
from a2m_utils.generate import PAPER_CAPTURE_STEP, PAPER_STEPS, generate
from a2m_utils.nti import NTI_STEPS, invert
from a2m_utils.sd import SD14_UNET_CONFIG, TINY_SD_UNET_CONFIG, sd_unet
from a2m_utils.toymodel import build_tokenizer

# CompVis/stable-diffusion-v1-4 vae/config.json and the text encoder's (CLIP ViT-L/14) shape.
SD14_VAE_CONFIG = dict(in_channels=3, out_channels=3, latent_channels=4, layers_per_block=2, sample_size=512,
                       block_out_channels=(128, 256, 512, 512), down_block_types=("DownEncoderBlock2D",) * 4,
                       up_block_types=("UpDecoderBlock2D",) * 4, norm_num_groups=32)
SD14_TEXT = dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12)
TINY_VAE_CONFIG = dict(SD14_VAE_CONFIG, sample_size=32, block_out_channels=(8, 8), layers_per_block=1,
                       down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
                       norm_num_groups=4)
TINY_TEXT = dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2)


def sd_sized(device: str, dtype: torch.dtype, tiny: bool) -> Backend:
    tok = build_tokenizer()
    tok.model_max_length = 77
    torch.manual_seed(0)
    text = CLIPTextModel(CLIPTextConfig(vocab_size=len(tok), max_position_embeddings=77, bos_token_id=tok.bos_token_id,
                                        eos_token_id=tok.eos_token_id, **(TINY_TEXT if tiny else SD14_TEXT)))
    tiny_unet = dict(TINY_SD_UNET_CONFIG, cross_attention_dim=TINY_TEXT["hidden_size"])
    unet = sd_unet(tiny_unet if tiny else SD14_UNET_CONFIG)
    vae = AutoencoderKL(**(TINY_VAE_CONFIG if tiny else SD14_VAE_CONFIG))
    sched = DDPMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", steps_offset=1)
    parts = [m.to(device, dtype).eval() for m in (unet, text, vae)]
    return Backend(parts[0], parts[1], tok, sched, parts[2], name="sd14-config-random")


def measure(device: str, fn) -> tuple[float, float]:
    """Seconds and peak allocated GiB of ``fn()`` (memory on CUDA only)."""
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    fn()
    if device == "cuda":
        torch.cuda.synchronize()
        return time.perf_counter() - t0, torch.cuda.max_memory_allocated() / 2**30
    return time.perf_counter() - t0, float("nan")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cuda")
    p.add_argument("--tiny", action="store_true", help="tiny models (a check of the script on a CPU)")
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 4, 8])
    p.add_argument("--nti-batch-sizes", type=int, nargs="+", default=[1, 4])
    p.add_argument("--steps", type=int, default=PAPER_STEPS)
    p.add_argument("--nti-steps", type=int, default=NTI_STEPS)
    a = p.parse_args()
    dtype = torch.float16 if a.device == "cuda" else torch.float32
    backend = sd_sized(a.device, dtype, a.tiny)
    name = torch.cuda.get_device_name() if a.device == "cuda" else "CPU"
    print(f"{backend.name}{' (tiny)' if a.tiny else ''}, {backend.image_size}x{backend.image_size}, {dtype}, {name}")
    prompt = "a red circle and a blue square"
    generate(backend, [prompt], [0], num_steps=2, capture_steps=1)  # warm-up, untimed
    for b in a.batch_sizes:
        s, gib = measure(a.device, partial(generate, backend, [prompt] * b, list(range(b)), num_steps=a.steps,
                                           capture_steps=min(PAPER_CAPTURE_STEP, a.steps - 1)))
        print(f"generation, {a.steps} DDPM steps, batch {b}: {s / b:.2f} s/image, peak {gib:.2f} GiB", flush=True)
    images = np.random.default_rng(0).integers(0, 256, (max(a.nti_batch_sizes), backend.image_size,
                                                        backend.image_size, 3), dtype=np.uint8)
    for b in a.nti_batch_sizes:
        s, gib = measure(a.device, partial(invert, backend, images[:b], [prompt] * b, num_steps=a.nti_steps))
        print(f"null-text inversion, {a.nti_steps} DDIM steps x 10, batch {b}: {s / b:.1f} s/image, "
              f"peak {gib:.2f} GiB", flush=True)


if __name__ == "__main__":
    main()
