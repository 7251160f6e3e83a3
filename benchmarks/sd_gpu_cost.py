"""Time and GPU memory of the Stable Diffusion path at the paper's settings, with random weights.

The pipeline has Stable Diffusion 1.4's configuration (U-Net, VAE, a 12-layer CLIP ViT-L text
encoder) and random weights: the compute is that of the real checkpoint, which cannot be
downloaded here. Measured in one run: dataset generation (512x512, 100 DDPM steps, guidance
7.5, maps of step 50) at several batch sizes, as the user's own ``pipe(...)`` call under
``a2m_utils.trace`` and, beside it at the same batch, the same call without trace (their
ratio is the capture's cost); and null-text inversion (50 DDIM steps, 10 inner steps). Each as
seconds per image and peak allocated GPU memory.

    python benchmarks/sd_gpu_cost.py [--device cuda] [--batch-sizes 1 4 8] [--nti-batch-sizes 1 4]
    python benchmarks/sd_gpu_cost.py --device cpu --tiny   # a check of the script itself
"""

from __future__ import annotations

import argparse
import time
from functools import partial

import numpy as np
import torch

import a2m_utils as a2m
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
    pipe = sd_sized(a.device, dtype, a.tiny)
    size = image_size(pipe)
    name = torch.cuda.get_device_name() if a.device == "cuda" else "CPU"
    print(f"sd14-config-random{' (tiny)' if a.tiny else ''}, {size}x{size}, {dtype}, {name}")
    prompt = "a red circle and a blue square"

    def call(b: int, steps: int) -> None:
        """The user's own call: a batch of prompts, one seeded generator per image, decoded images."""
        pipe([prompt] * b, num_inference_steps=steps, guidance_scale=GUIDANCE, output_type="pt",
             generator=[torch.Generator().manual_seed(i) for i in range(b)])

    def traced(b: int, steps: int, capture: int) -> None:
        with a2m.trace(pipe, steps=capture) as t:
            call(b, steps)
        t.attention()  # the maps, on the CPU

    traced(1, 2, 1)  # warm-up, untimed
    call(1, 2)
    capture = min(PAPER_CAPTURE_STEP, a.steps - 1)
    for b in a.batch_sizes:
        s, gib = measure(a.device, partial(traced, b, a.steps, capture))
        plain_s, plain_gib = measure(a.device, partial(call, b, a.steps))
        print(f"generation, {a.steps} DDPM steps, batch {b}: {s / b:.2f} s/image, peak {gib:.2f} GiB", flush=True)
        print(f"  same call without trace: {plain_s / b:.2f} s/image, peak {plain_gib:.2f} GiB; "
              f"capture/plain {s / plain_s:.3f}", flush=True)
    images = np.random.default_rng(0).integers(0, 256, (max(a.nti_batch_sizes), size, size, 3), dtype=np.uint8)
    for b in a.nti_batch_sizes:
        s, gib = measure(a.device, partial(invert, pipe, images[:b], [prompt] * b, num_steps=a.nti_steps))
        print(f"null-text inversion, {a.nti_steps} DDIM steps x 10, batch {b}: {s / b:.1f} s/image, "
              f"peak {gib:.2f} GiB", flush=True)


if __name__ == "__main__":
    main()
