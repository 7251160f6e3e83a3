"""Dataset generation throughput in the toy world, and the share of time spent outside the model.

Measured in one run on the same prompts and seeds: the bare pipeline call (``pipe(...)`` with
``output_type="latent"``, no capture: the model's work, nothing else) and the full writer
(``DatasetWriter.run``: the same sampling plus attention capture, Eqs. 4-6, dense CRF,
self-attention refinement and atomic writes of the VOC layout). Outside share = 1 - model
time / writer time; target: at most 15%.

    python benchmarks/dataset_throughput.py [--n 64] [--threads 2]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import replace

import torch

import a2m_utils as a2m
import a2m_utils.toy  # registers the toy preset
from a2m_utils.dataset import DatasetWriter
from a2m_utils.registry import PRESETS
from a2m_utils.toy.world import TOY, toy_prompts


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n", type=int, default=64)
    p.add_argument("--threads", type=int, default=0)
    a = p.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    preset = PRESETS["toy"]
    pipe, settings = a2m.load_pipeline(preset.model, "cpu", scheduler=preset.scheduler), preset.settings
    prompts = toy_prompts(a.n, seed=9)
    b = settings.batch_size

    def sample(batch) -> None:
        pipe([q.text for q in batch], num_inference_steps=settings.num_steps, guidance_scale=settings.guidance_scale,
             generator=[torch.Generator().manual_seed(q.seed) for q in batch], output_type="latent")

    sample(prompts[:b])  # untimed: the first call pays for allocation and kernel selection
    t0 = time.perf_counter()
    for i in range(0, a.n, b):
        sample(prompts[i:i + b])
    model_s = time.perf_counter() - t0
    rows = {}
    for name, s in (("writer (preset: + self-attention refinement)", settings),
                    ("writer without self-attention refinement", replace(settings, self_attention_res=None))):
        with tempfile.TemporaryDirectory() as root:
            t0 = time.perf_counter()
            DatasetWriter(root, pipe, TOY, prompts, s).run(progress=False)
            rows[name] = time.perf_counter() - t0
    print(f"toy world, {a.n} images, {settings.num_steps} DDIM steps, CFG {settings.guidance_scale}, batch {b}, "
          f"{torch.get_num_threads()} threads")
    print(f"model only (sampling loop): {model_s:.1f} s, {a.n / model_s:.2f} images/s")
    for name, total in rows.items():
        print(f"{name}: {total:.1f} s, {a.n / total:.2f} images/s, outside the model {1 - model_s / total:.1%} "
              f"(target <= 15%)")


if __name__ == "__main__":
    main()
