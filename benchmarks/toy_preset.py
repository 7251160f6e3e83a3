"""The toy preset's sampler, guidance and background prior beta (Eq. 5), chosen on development
seeds that no notebook generates, trains or evaluates on (``toy.sets.DEV_SEED0``).

For each sampler setting, 64 two-object prompts are generated once; for each beta their
pseudo-masks (Eqs. 4-6, dCRF) are scored against the oracle's masks of the same images
(``oracle.check_generation``), and the attention of rendered development images against
their exact labels (one forward pass at t = 500, as notebook 02 measures). Prints one JSON
line per (setting, beta); ``benchmarks/results/toy_preset.jsonl`` holds the sweep that chose
the preset (at stage 3 of the toy model: ``--model models/toy-t2i-stage3 --settings ddim:20:2.0 ddim:20:1.5
ddim:20:3.0``).

    python benchmarks/toy_preset.py [--seed0 8000000000] [--settings ddim:20:2.0 ...] [--betas 0 0.2 ...]
                                    [--model models/toy-t2i]
"""

from __future__ import annotations

import argparse
import json
import time

import diffusers
import numpy as np
import torch

import a2m_utils as a2m
from a2m_utils import masks, segmentation
from a2m_utils.registry import PRESETS
from a2m_utils.toy import world as toyworld
from a2m_utils.toy.oracle import check_generation, load_or_train_oracle
from a2m_utils.toy.probe import rendered_attention_by_beta
from a2m_utils.toy.sets import DEV_SEED0
from a2m_utils.toy.world import TOY

SAMPLERS = {"ddpm": "DDPMScheduler", "ddim": "DDIMScheduler"}  # the settings' short names; else a diffusers class name
BATCH_SIZE = 16


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seed0", type=int, default=DEV_SEED0, help="scene seeds of the prompts")
    p.add_argument("--n", type=int, default=64)
    p.add_argument("--settings", nargs="+", default=["ddim:20:2.0"], help="sampler:steps:guidance")
    p.add_argument("--betas", nargs="+", type=float, default=[0.0, 0.05, 0.1, 0.15, 0.2, 0.3])
    p.add_argument("--n-rendered", type=int, default=128, help="rendered images, seeds from seed0 + 10**8")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--model", help="toy model folder (default: the committed one)")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    model, oracle = a2m.load_pipeline(a.model or PRESETS["toy"].model, "cpu"), load_or_train_oracle()
    schedule = model.scheduler.config  # the model's noise schedule, for every sampler
    samples = [toyworld.make_sample(a.seed0 + i, max_objects=2) for i in range(a.n)]
    scenes, prompts = [s.scene for s in samples], [s.caption for s in samples]
    rendered = list(range(a.seed0 + 10**8, a.seed0 + 10**8 + a.n_rendered))
    by_beta = rendered_attention_by_beta(model, rendered, (500,), a.betas, variants=(False,))
    attention = {b: v[False]["miou"] for b, v in by_beta.items()}
    for setting in a.settings:
        sampler, steps, guidance = setting.split(":")
        t0 = time.time()
        model.scheduler = getattr(diffusers, SAMPLERS.get(sampler, sampler)).from_config(schedule)
        images, pseudo = [], []
        for i in range(0, a.n, BATCH_SIZE):
            t = a2m.generate(model, prompts[i:i + BATCH_SIZE], list(range(i, min(i + BATCH_SIZE, a.n))), steps=None,
                             num_inference_steps=int(steps), guidance_scale=float(guidance))
            images.append(t.images)
            pseudo += t.pseudo_masks(TOY, "argmax")
        images = np.concatenate(images)
        truth, seconds = segmentation.predict(oracle, images), time.time() - t0
        for beta in a.betas:
            labels = [masks.label_map(pm.maps, pm.class_ids, "dcrf", image=im, beta=beta)
                      for pm, im in zip(pseudo, images)]
            got = check_generation(truth, labels, scenes)
            print(json.dumps({"model": a.model, "seed0": a.seed0, "sampler": sampler, "steps": int(steps),
                              "guidance": float(guidance), "beta": beta, "pseudomask_miou": round(got["miou"], 3),
                              "rendered_attention_miou": round(attention[beta], 3), "all_found": got["all_found"],
                              "exact": got["exact"], "generation_s": round(seconds)}), flush=True)


if __name__ == "__main__":
    main()
