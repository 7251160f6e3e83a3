"""Cost of attention capture: sampling time with capture / without, and capture-state memory.

Measured in one run, interleaving the variants: the plain sampling loop (``sample``),
the same loop capturing the paper's single step, and capturing every step. Models:
the toy model (committed weights if present) and a U-Net of the Stable Diffusion 1.4
configuration with random weights (same compute as the real one) at 64x64 latents,
with a one-layer width-768 text encoder and no VAE decode (identical in both arms).
Memory: the capture state's high-water mark (``AttentionStore.peak_bytes``) for 10 and
100 steps, all steps captured.

    python benchmarks/capture_overhead.py [--sd-steps 3] [--repeats 3] [--threads N]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from a2m_utils.capture import capture_attention
from a2m_utils.backends import TOY_DEFAULT, Backend, load_toy
from a2m_utils.generate import sample
from a2m_utils.sd import random_sd
from a2m_utils.toy.pipeline import build_tokenizer, new_toy


def sd_backend(latent: int) -> Backend:
    tok = build_tokenizer()
    tok.model_max_length = 77
    return random_sd(tok, text_layers=1, vae=False, latent=latent)


def run(backend: Backend, steps: int, capture, prompts: list[str]) -> tuple[float, int]:
    seeds = list(range(len(prompts)))
    t0 = time.perf_counter()
    if capture is False:
        sample(backend, prompts, seeds, num_steps=steps, guidance_scale=7.5)
        return time.perf_counter() - t0, 0
    with capture_attention(backend.unet, steps=capture) as store:
        sample(backend, prompts, seeds, num_steps=steps, guidance_scale=7.5)
    return time.perf_counter() - t0, store.peak_bytes


def ratios(backend: Backend, steps: int, repeats: int, prompts: list[str]) -> dict[str, float]:
    arms = {"none": False, "one step": steps // 2, "all steps": None}
    times = {k: [] for k in arms}
    peak = {}
    run(backend, 1, False, prompts)  # warm-up
    for _ in range(repeats):
        for k, cap in arms.items():
            seconds, peak[k] = run(backend, steps, cap, prompts)
            times[k].append(seconds)
    base = statistics.median(times["none"])
    print(f"  sampling without capture: {base:.2f} s ({steps} steps, median of {repeats})")
    for k in ("one step", "all steps"):
        print(f"  capture {k:9s}: ratio {statistics.median(times[k]) / base:.3f}, "
              f"capture-state peak {peak[k] / 2**20:.2f} MiB")
    return {k: statistics.median(v) / base for k, v in times.items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sd-steps", type=int, default=3)
    p.add_argument("--toy-steps", type=int, default=50)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=0)
    a = p.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    print(f"torch threads: {torch.get_num_threads()}")
    torch.manual_seed(0)
    toy = load_toy() if TOY_DEFAULT.is_dir() else new_toy(0)
    toy_prompts = ["a red circle and a blue square"] * 8
    with torch.no_grad():
        print(f"toy model ({'committed weights' if TOY_DEFAULT.is_dir() else 'random'}), batch 8:")
        ratios(toy, a.toy_steps, a.repeats, toy_prompts)
        for n in (10, 100):
            print(f"  capture-state peak, {n} steps: {run(toy, n, None, toy_prompts)[1] / 2**20:.3f} MiB")
        print("Stable Diffusion 1.4 U-Net configuration, random weights, 64x64 latents, batch 1:")
        ratios(sd_backend(64), a.sd_steps, a.repeats, ["a red circle"])
        small = sd_backend(16)
        print("Stable Diffusion 1.4 configuration at 16x16 latents (memory only):")
        for n in (10, 100):
            print(f"  capture-state peak, {n} steps: {run(small, n, None, ['a red circle'])[1] / 2**20:.3f} MiB")


if __name__ == "__main__":
    main()
