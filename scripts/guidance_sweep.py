"""Sampler steps and classifier-free guidance of the toy model, scored the way notebook 02 scores
the pipeline: pseudo-masks (Eqs. 4-6, dCRF, beta 0.2) against the oracle's masks of the same
generated images, and prompt fidelity. Prints one JSON line per setting.

    python scripts/guidance_sweep.py [--seed0 7000000000] [--n 64] [--settings ddim:20:2.0 ddim:20:3.0 ...]
"""

from __future__ import annotations

import argparse
import json
import time
from collections import Counter

import numpy as np
import torch

from a2m_utils import segmentation, toyworld
from a2m_utils.backends import load_backend
from a2m_utils.classes import TOY
from a2m_utils.generate import generate_many
from a2m_utils.metrics import confusion_matrix, scores
from a2m_utils.oracle import fidelity, load_or_train_oracle
from a2m_utils.pipeline import build_pseudo_mask


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seed0", type=int, default=7 * 10**9, help="scene seeds (notebook 02 uses 4e9)")
    p.add_argument("--n", type=int, default=64)
    p.add_argument("--settings", nargs="+", default=["ddim:20:2.0", "ddim:20:1.5", "ddim:20:1.0", "ddim:10:2.0",
                                                     "ddim:10:1.5", "ddim:30:2.0"], help="sampler:steps:guidance")
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    model, oracle = load_backend("toy"), load_or_train_oracle()
    scenes = [toyworld.make_sample(a.seed0 + i, max_objects=2) for i in range(a.n)]
    prompts = [s.caption for s in scenes]
    prompted = [dict(Counter(o.shape for o in s.scene.objects)) for s in scenes]
    for setting in a.settings:
        sampler, steps, guidance = setting.split(":")
        t0 = time.time()
        gen = generate_many(model, prompts, list(range(a.n)), batch_size=16, num_steps=int(steps),
                            guidance_scale=float(guidance), capture_steps=None, sampler_name=sampler)
        pseudo = [build_pseudo_mask(m, q, im, model.tokenizer, TOY, "dcrf", 0.2, 0.5)
                  for m, q, im in zip(gen.attention, prompts, gen.images)]
        truth = segmentation.predict(oracle, gen.images)
        found, exact = map(np.array, zip(*(fidelity(t, q) for t, q in zip(truth, prompted))))
        conf = sum(confusion_matrix(m.label, t, TOY.num_classes) for m, t in zip(pseudo, truth))
        print(json.dumps({"seed0": a.seed0, "sampler": sampler, "steps": int(steps), "guidance": float(guidance),
                          "pseudomask_miou": round(scores(conf)["miou"], 3), "all_found": float(found.mean()),
                          "exact": float(exact.mean()), "seconds": round(time.time() - t0)}), flush=True)


if __name__ == "__main__":
    main()
