"""Cost of attention capture around the user's own ``pipe(...)`` call: time with ``a2m.trace`` /
without, and the capture state's memory.

Measured in one run, interleaving the arms: the plain pipeline call, the same call under
``trace`` capturing the paper's single step, and capturing every step. Pipelines: the toy
pipeline (committed weights) and a Stable Diffusion 1.4-shaped pipeline with random weights
(same compute as the real U-Net) at 64x64 latents, with a one-layer width-768 text encoder and
``output_type="latent"`` (no VAE decode, identical in both arms). Memory: the capture state's
high-water mark (``AttentionStore.peak_bytes``) for 10 and 100 steps, all steps captured.

    python benchmarks/capture_overhead.py [--sd-steps 3] [--repeats 3] [--threads N] [--only toy|sd]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from diffusers import DDIMScheduler

import a2m_utils as a2m
from a2m_utils.sd import random_sd
from a2m_utils.toy.pipeline import build_tokenizer, load_toy


def sd_pipeline(latent: int):
    tok = build_tokenizer()
    tok.model_max_length = 77
    return random_sd(tok, text_layers=1, latent=latent)


def run(pipe, steps: int, capture, prompts: list[str]) -> tuple[float, int]:
    """Seconds of one ``pipe(...)`` call (under ``trace`` unless ``capture`` is False) and the capture peak."""
    call = lambda: pipe(prompts, num_inference_steps=steps, guidance_scale=7.5, output_type="latent",
                        generator=[torch.Generator().manual_seed(i) for i in range(len(prompts))])
    t0 = time.perf_counter()
    if capture is False:
        call()
        return time.perf_counter() - t0, 0
    with a2m.trace(pipe, steps=capture) as t:
        call()
    return time.perf_counter() - t0, t.store.peak_bytes


def ratios(pipe, steps: int, repeats: int, prompts: list[str]) -> dict[str, float]:
    arms = {"none": False, "one step": steps // 2, "all steps": None}
    times = {k: [] for k in arms}
    peak = {}
    run(pipe, 1, False, prompts)  # warm-up
    for _ in range(repeats):
        for k, cap in arms.items():
            seconds, peak[k] = run(pipe, steps, cap, prompts)
            times[k].append(seconds)
    base = statistics.median(times["none"])
    print(f"  pipe(...) without capture: {base:.2f} s ({steps} steps, median of {repeats})")
    for k in ("one step", "all steps"):
        print(f"  capture {k:9s}: ratio {statistics.median(times[k]) / base:.3f}, "
              f"capture-state peak {peak[k] / 2**20:.2f} MiB")
    return {k: statistics.median(v) / base for k, v in times.items()}


def toy_pipeline(steps: int, repeats: int) -> None:
    toy = load_toy()
    toy.scheduler = DDIMScheduler.from_config(toy.scheduler.config)
    toy_prompts = ["a red circle and a blue square"] * 8
    print("toy pipeline (committed weights), DDIM, batch 8:")
    ratios(toy, steps, repeats, toy_prompts)
    for n in (10, 100):
        print(f"  capture-state peak, {n} steps: {run(toy, n, None, toy_prompts)[1] / 2**20:.3f} MiB")


def sd_pipelines(steps: int, repeats: int) -> None:
    print("Stable Diffusion 1.4-shaped pipeline, random weights, 64x64 latents, DDPM, batch 1:")
    ratios(sd_pipeline(64), steps, repeats, ["a red circle"])
    small = sd_pipeline(16)
    print("Stable Diffusion 1.4 configuration at 16x16 latents (memory only):")
    for n in (10, 100):
        print(f"  capture-state peak, {n} steps: {run(small, n, None, ['a red circle'])[1] / 2**20:.3f} MiB")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sd-steps", type=int, default=3)
    p.add_argument("--toy-steps", type=int, default=50)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--only", choices=("toy", "sd"), help="measure one of the two pipelines")
    a = p.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    print(f"torch threads: {torch.get_num_threads()}")
    if a.only != "sd":
        toy_pipeline(a.toy_steps, a.repeats)
    if a.only != "toy":
        sd_pipelines(a.sd_steps, a.repeats)


if __name__ == "__main__":
    main()
