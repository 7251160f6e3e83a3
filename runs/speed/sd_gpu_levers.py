"""Levers beside benchmarks/sd_gpu_cost.py's, at batch 32 and the paper's settings, in one run:
regional compile on the loaded (contiguous) layout, then with cuDNN autotuning, and a whole-U-Net
torch.compile of the plain call (no trace) as the ceiling regional compilation is measured against.

    python runs/speed/sd_gpu_levers.py

Measured (``sd_gpu_levers.txt``) at commit 0c05e13, when ``a2m_utils.fast`` compiled the U-Net's
parts without attention processors (regional); ``fast`` now compiles the whole U-Net, so the
first three arms reproduce only at that commit.
"""

from __future__ import annotations

import sys
from functools import partial
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import a2m_utils as a2m  # noqa: E402
from a2m_utils.fast import fast  # noqa: E402
from sd_gpu_cost import GUIDANCE, PAPER_CAPTURE_STEP, PAPER_STEPS, image_flops, measure, sd_sized  # noqa: E402

B, PROMPT = 32, "a red circle and a blue square"


def call(pipe, b: int, steps: int) -> None:
    pipe([PROMPT] * b, num_inference_steps=steps, guidance_scale=GUIDANCE, output_type="pt",
         generator=[torch.Generator().manual_seed(i) for i in range(b)])


def traced(pipe, b: int, steps: int) -> None:
    with a2m.trace(pipe, steps=min(PAPER_CAPTURE_STEP, steps - 1)) as t:
        call(pipe, b, steps)
    t.attention()


def report(what: str, pipe, fn, flops: float) -> None:
    fn(pipe, B, 2)  # warm-up and compilation, untimed
    s, gib = measure("cuda", partial(fn, pipe, B, PAPER_STEPS))
    print(f"{what}, batch {B}: {s / B:.3f} s/image, {flops * B / s / 1e12:.0f} TFLOP/s, peak {gib:.2f} GiB", flush=True)


def main() -> None:
    pipe = sd_sized("cuda", torch.float16, False)
    flops = image_flops(pipe, PAPER_STEPS)
    fast(pipe, channels_last=False, fuse_qkv=False)
    report("regional compile, contiguous, traced", pipe, traced, flops)
    report("regional compile, contiguous, plain", pipe, call, flops)
    torch.backends.cudnn.benchmark = True
    report("regional compile, contiguous, cudnn.benchmark, traced", pipe, traced, flops)
    torch.backends.cudnn.benchmark = False
    whole = sd_sized("cuda", torch.float16, False)
    whole.unet = torch.compile(whole.unet)
    report("whole-U-Net torch.compile, plain (no trace)", whole, call, flops)


if __name__ == "__main__":
    main()
