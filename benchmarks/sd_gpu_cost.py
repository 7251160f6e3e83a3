"""Time and GPU memory of the Stable Diffusion path at the paper's settings, with random weights.

The pipeline has Stable Diffusion 1.4's configuration (U-Net, VAE, a 12-layer CLIP ViT-L text
encoder) and random weights: the compute is that of the real checkpoint, which cannot be
downloaded here. Measured in one run, each as seconds per image, peak allocated GPU memory and
the FLOP rate it reaches (a U-Net forward's FLOPs, counted, times 2 for guidance, times the steps,
plus the VAE decode): dataset generation (512x512, 100 DDPM steps, guidance 7.5, maps of step
50) as the user's own ``pipe(...)`` call under ``a2m_utils.trace``,

- at several batch sizes, as loaded (``--batch-sizes``);
- at one batch (``--batch``), adding ``a2m_utils.fast``'s levers one at a time: channels-last,
  fused q/k/v projections, ``torch.compile`` of the U-Net;
- with every lever, at ``--batch`` and ``--more-batches``, beside the same call without trace
  (their ratio is the capture's cost);

and null-text inversion (50 DDIM steps, 10 inner steps) at ``--nti-batch-sizes``, as loaded.

    python benchmarks/sd_gpu_cost.py [--device cuda] [--batch-sizes 8 32] [--batch 32] [--nti-batch-sizes 1 4]
    python benchmarks/sd_gpu_cost.py --device cpu --tiny   # a check of the script itself
"""

from __future__ import annotations

import argparse
import time
from functools import partial

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

import a2m_utils as a2m
from a2m_utils.fast import fast
from a2m_utils.latents import image_size
from a2m_utils.nti import NTI_STEPS, invert
from a2m_utils.registry import PRESETS
from a2m_utils.sd import random_sd
from a2m_utils.toy.pipeline import build_tokenizer

PAPER_STEPS = PRESETS["sd"].settings.num_steps  # 100 DDPM steps (random_sd's scheduler is DDPM)
PAPER_CAPTURE_STEP = PRESETS["sd"].settings.capture_steps[0]  # 50
GUIDANCE = PRESETS["sd"].settings.guidance_scale  # 7.5


def sd_sized(device: str, dtype: torch.dtype, tiny: bool):
    tok = build_tokenizer()
    tok.model_max_length = 77
    return random_sd(tok, tiny=tiny).to(device, dtype)


def image_flops(pipe, steps: int) -> float:
    """FLOPs of one generated image: ``steps`` guided U-Net forwards (two samples each) and a VAE decode."""
    size, device, dtype = pipe.unet.config.sample_size, pipe.device, pipe.unet.dtype
    latent = torch.zeros(2, 4, size, size, device=device, dtype=dtype)
    text = torch.zeros(2, pipe.tokenizer.model_max_length, pipe.unet.config.cross_attention_dim, device=device, dtype=dtype)
    with torch.no_grad(), FlopCounterMode(display=False) as unet:
        pipe.unet(latent, 500, encoder_hidden_states=text)
    with torch.no_grad(), FlopCounterMode(display=False) as vae:
        pipe.vae.decode(latent[:1])
    return steps * unet.get_total_flops() + vae.get_total_flops()


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
    p.add_argument("--batch-sizes", type=int, nargs="*", default=[8, 32], help="as loaded, traced")
    p.add_argument("--batch", type=int, default=32, help="the batch of the levers and of capture/plain")
    p.add_argument("--more-batches", type=int, nargs="*", default=[64], help="every lever, traced and plain")
    p.add_argument("--time-levers", action=argparse.BooleanOptionalAction, default=True,
                   help="time the levers one at a time at --batch (else apply them all untimed)")
    p.add_argument("--nti-batch-sizes", type=int, nargs="*", default=[1, 4])
    p.add_argument("--steps", type=int, default=PAPER_STEPS)
    p.add_argument("--nti-steps", type=int, default=NTI_STEPS)
    a = p.parse_args()
    dtype = torch.float16 if a.device == "cuda" else torch.float32
    pipe = sd_sized(a.device, dtype, a.tiny)
    size = image_size(pipe)
    name = torch.cuda.get_device_name() if a.device == "cuda" else "CPU"
    flops = image_flops(pipe, a.steps)
    print(f"sd14-config-random{' (tiny)' if a.tiny else ''}, {size}x{size}, {dtype}, {name}, torch {torch.__version__}; "
          f"{flops / 1e12:.1f} TFLOP per image at {a.steps} guided steps", flush=True)
    prompt = "a red circle and a blue square"
    capture = min(PAPER_CAPTURE_STEP, a.steps - 1)

    def call(b: int, steps: int) -> None:
        """The user's own call: a batch of prompts, one seeded generator per image, decoded images."""
        pipe([prompt] * b, num_inference_steps=steps, guidance_scale=GUIDANCE, output_type="pt",
             generator=[torch.Generator().manual_seed(i) for i in range(b)])

    def traced(b: int, steps: int, capture: int) -> None:
        with a2m.trace(pipe, steps=capture) as t:
            call(b, steps)
        t.attention()  # the maps, on the CPU

    def report(what: str, b: int, plain: bool = False) -> None:
        traced(b, 2, 1)  # warm-up at this batch (and compilation, under fast), untimed
        call(b, 2)
        s, gib = measure(a.device, partial(traced, b, a.steps, capture))
        print(f"{what}, batch {b}: {s / b:.3f} s/image, {flops * b / s / 1e12:.0f} TFLOP/s, peak {gib:.2f} GiB", flush=True)
        if plain:
            plain_s, plain_gib = measure(a.device, partial(call, b, a.steps))
            print(f"  same call without trace: {plain_s / b:.3f} s/image, peak {plain_gib:.2f} GiB; "
                  f"capture/plain {s / plain_s:.3f}", flush=True)

    for b in a.batch_sizes:
        report(f"as loaded, {a.steps} DDPM steps, maps of step {capture}", b)
    images = np.random.default_rng(0).integers(0, 256, (max(a.nti_batch_sizes, default=0), size, size, 3), dtype=np.uint8)
    for b in a.nti_batch_sizes:
        s, gib = measure(a.device, partial(invert, pipe, images[:b], [prompt] * b, num_steps=a.nti_steps))
        print(f"null-text inversion, {a.nti_steps} DDIM steps x 10, batch {b}: {s / b:.1f} s/image, "
              f"peak {gib:.2f} GiB", flush=True)
    levers = [("+ channels-last", dict(fuse_qkv=False, compile=False)),
              ("+ fused q/k/v", dict(channels_last=False, compile=False)),
              ("+ torch.compile", dict(channels_last=False, fuse_qkv=False))]
    for what, kwargs in levers:
        fast(pipe, **kwargs)
        if a.time_levers:
            report(what, a.batch, plain=what == levers[-1][0])
    for b in a.more_batches:
        report("every lever", b, plain=True)


if __name__ == "__main__":
    main()
