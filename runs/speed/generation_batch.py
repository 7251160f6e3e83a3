"""Sampling time per image against the batch size: the toy preset's sampling (bf16, every step captured with
self-attention at 16x16, guidance 2) of 64 prompts on 2 threads, the arms interleaved, each twice.

    python runs/speed/generation_batch.py NUM_STEPS
"""
import json, sys, time

import torch

from a2m_utils import generate
from a2m_utils.study.combination import Study
from a2m_utils.toy import world


def main() -> None:
    torch.set_num_threads(2)
    steps = int(sys.argv[1])
    pipe = Study().pipeline()
    pipe.set_progress_bar_config(disable=True)
    prompts = world.toy_prompts(64, seed=123)
    best = {}
    for _ in range(2):
        for b in (16, 32, 64):
            t0 = time.perf_counter()
            for i in range(0, len(prompts), b):
                batch = prompts[i:i + b]
                generate(pipe, [p.text for p in batch], [p.seed for p in batch], steps=None, self_attention_res=16,
                         precision="bf16", num_inference_steps=steps, guidance_scale=2.0)
            best[b] = min(best.get(b, 1e9), (time.perf_counter() - t0) / len(prompts))
    print(json.dumps({"num_steps": steps, "s_per_image": {b: round(s, 4) for b, s in best.items()}}))


if __name__ == "__main__":
    main()
