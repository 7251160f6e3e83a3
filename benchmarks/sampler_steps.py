"""How few DDIM steps does the toy world's sampling need? Pseudo-masks (dCRF, beta 0, r 0.6: notebook
06's settings) of 256 development prompts (seed 123) against the oracle's masks of the same generated
images, and the sampling time per image, for each step count on the command line (one thread, bf16,
batch 16, every step captured with self-attention, as the toy preset samples).

    python benchmarks/sampler_steps.py 20 14 10
"""

from __future__ import annotations

import json
import sys
import time

import numpy as np
import torch

from a2m_utils import generate, segmentation
from a2m_utils.metrics import confusion_matrix, scores
from a2m_utils.study.combination import Study
from a2m_utils.toy import world
from a2m_utils.toy.oracle import load_or_train_oracle
from a2m_utils.toy.world import TOY

BATCH_SIZE = 16


def main() -> None:
    torch.set_num_threads(1)
    pipe, oracle = Study().pipeline(), load_or_train_oracle()
    prompts = world.toy_prompts(256, seed=123)
    for steps in map(int, sys.argv[1:]):
        labels, images, t0 = [], [], time.perf_counter()
        for i in range(0, len(prompts), BATCH_SIZE):
            batch = prompts[i:i + BATCH_SIZE]
            t = generate(pipe, [p.text for p in batch], [p.seed for p in batch], steps=None, self_attention_res=16,
                         precision="bf16", num_inference_steps=steps, guidance_scale=2.0)
            labels += [m.label for m in t.pseudo_masks(TOY, "dcrf", 0.0, 0.6)]
            images.append(t.images)
        seconds = (time.perf_counter() - t0) / len(prompts)
        truth = segmentation.predict(oracle, np.concatenate(images))
        miou = scores(confusion_matrix(np.stack(labels), truth, TOY.num_classes))["miou"]
        print(json.dumps({"num_steps": steps, "s_per_image": round(seconds, 4), "pseudo_mask_miou": round(miou, 4)}),
              flush=True)


if __name__ == "__main__":
    main()
