"""Cost of attention capture around the user's own ``pipe(...)`` call, per architecture: time under
``a2m.trace`` over time without (target <= 1.05), and the capture state's memory.

Measured in one run on the CPU, architecture by architecture, interleaving the arms: the plain call,
the same call under ``trace`` capturing the middle step (the paper's single step), and capturing every
step; medians of ``--repeats``. Time is the process's CPU time (``time.process_time``): on a shared
machine wall-clock time measures the neighbours too; with ``--threads 1`` it is the compute. The
pipelines have random weights and the real layers where capture works (widths, heads, text lengths),
fewer of them, 256x256 images, ``output_type="latent"`` (no VAE decode, the same in every arm) and
one-layer text encoders:

- SD 1.x: Stable Diffusion 1.4's whole U-Net (16 cross-attention layers), 32x32 latents, guidance 7.5;
- SDXL: SDXL base 1.0's U-Net with 2 transformer layers per block where it has 10 (22 of its 70
  cross-attention layers), 32x32 latents, guidance 5.0;
- SD3: SD3 medium's transformer, 4 of its 24 joint blocks, a 16x16 patch grid, T5 at the pipeline's
  256 tokens (333 text tokens in all), guidance 7.0;
- Flux: FLUX.1-dev's transformer, 1 of its 19 double-stream and 2 of its 38 single-stream blocks, a
  16x16 patch grid, T5 at 128 tokens, guidance 3.5 (distilled: no unconditional batch).

    python benchmarks/capture_overhead.py [--steps 3] [--repeats 3] [--threads N] [--only sd sdxl sd3 flux]
"""

from __future__ import annotations

import argparse
import gc
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
from diffusers import AutoencoderKL, EulerDiscreteScheduler, StableDiffusionXLPipeline
from transformers import CLIPTextModel, CLIPTextModelWithProjection

import a2m_utils as a2m
from a2m_utils import dit, sd

PROMPT = "a photo of a dog and a cat"
TARGET = 1.05


def sd_pipeline(folder: Path):
    return sd.random_sd(sd.clip_tokenizer(folder), text_layers=1, latent=32)


def sdxl_pipeline(folder: Path):
    """SDXL's U-Net with transformer depths (1, 2, 2) for (1, 2, 10) and one-layer text encoders."""
    tokenizer, tokenizer_2 = sd.sdxl_tokenizers(folder)
    unet = sd.sd_unet(dict(sd.SDXL_UNET_CONFIG, sample_size=32, transformer_layers_per_block=(1, 2, 2)))
    text = CLIPTextModel(sd.clip_text_config(tokenizer, dict(sd.SD14_TEXT_CONFIG, num_hidden_layers=1)))
    text_2 = CLIPTextModelWithProjection(sd.clip_text_config(tokenizer_2, dict(sd.SDXL_TEXT_2_CONFIG,
                                                                               num_hidden_layers=1)))
    pipe = StableDiffusionXLPipeline(AutoencoderKL(**sd.SDXL_VAE_CONFIG), text, text_2, tokenizer, tokenizer_2,
                                     unet, EulerDiscreteScheduler(**sd.SDXL_SCHEDULER_CONFIG), add_watermarker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def sd3_pipeline(folder: Path):
    return dit.random_sd3(*sd.sdxl_tokenizers(folder), dit.t5_tokenizer(), transformer={"num_layers": 4},
                          text_layers=1)


def flux_pipeline(folder: Path):
    return dit.random_flux(sd.clip_tokenizer(folder), dit.t5_tokenizer(),
                           transformer={"num_layers": 1, "num_single_layers": 2}, text_layers=1)


ARCHITECTURES: dict[str, tuple[str, Callable, dict]] = {  # name -> (description, builder, call arguments)
    "sd": ("SD 1.x: SD 1.4's U-Net, 32x32 latents, batch 2 (CFG)", sd_pipeline, {"guidance_scale": 7.5}),
    "sdxl": ("SDXL: its U-Net at depths (1, 2, 2), 32x32 latents, batch 2 (CFG)", sdxl_pipeline,
             {"guidance_scale": 5.0}),
    "sd3": ("SD3: 4 joint blocks of SD3 medium, 16x16 patches, batch 2 (CFG)", sd3_pipeline,
            {"guidance_scale": 7.0, "height": 256, "width": 256}),
    "flux": ("Flux: 1 + 2 blocks of FLUX.1-dev, 16x16 patches, batch 1 (distilled)", flux_pipeline,
             {"guidance_scale": 3.5, "height": 256, "width": 256, "max_sequence_length": 128}),
}


def run(pipe, steps: int, capture, call: dict) -> tuple[float, int]:
    """CPU seconds of one ``pipe(...)`` call (under ``trace`` unless ``capture`` is False) and the capture peak."""
    def go():
        pipe(PROMPT, num_inference_steps=steps, output_type="latent", generator=torch.Generator().manual_seed(0),
             **call)

    t0 = time.process_time()
    if capture is False:
        go()
        return time.process_time() - t0, 0
    with a2m.trace(pipe, steps=capture) as t:
        go()
    return time.process_time() - t0, t.store.peak_bytes


def ratios(pipe, steps: int, repeats: int, call: dict) -> dict[str, float]:
    """Median time of each capture arm over the plain call's, arms interleaved."""
    arms = {"none": False, "one step": steps // 2, "all steps": None}
    times, peak = {k: [] for k in arms}, {}
    run(pipe, 1, False, call)  # warm-up
    for _ in range(repeats):
        for k, capture in arms.items():
            seconds, peak[k] = run(pipe, steps, capture, call)
            times[k].append(seconds)
    base = statistics.median(times["none"])
    print(f"  pipe(...) without capture: {base:.2f} CPU s ({steps} steps, median of {repeats})")
    out = {}
    for k in ("one step", "all steps"):
        out[k] = statistics.median(times[k]) / base
        print(f"  capture {k:9s}: ratio {out[k]:.3f}, capture-state peak {peak[k] / 2**20:.2f} MiB")
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--only", nargs="+", choices=list(ARCHITECTURES), default=list(ARCHITECTURES))
    a = p.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    print(f"torch threads: {torch.get_num_threads()}")
    results = {}
    for name in a.only:
        description, build, call = ARCHITECTURES[name]
        print(description)
        with tempfile.TemporaryDirectory() as folder, torch.no_grad():
            pipe = build(Path(folder))
            results[name] = ratios(pipe, a.steps, a.repeats, call)
        del pipe
        gc.collect()
    print(f"capture / plain time (target <= {TARGET}):")
    for name, r in results.items():
        verdict = "meets" if max(r.values()) <= TARGET else "misses"
        print(f"  {name:5s} one step {r['one step']:.3f}, all steps {r['all steps']:.3f}: {verdict} the target")


if __name__ == "__main__":
    main()
