"""Plain training vs BECO as the segmenters train longer: the toy study's 500 generated images
(notebook 06's cached dataset, the toy preset) and as many rendered images with exact labels,
scored on rendered development images (``toy.sets.DEV_SEED0 + 2 * 10**8``) that no notebook
uses. Prints one JSON line per (steps, method, seed).

    python scripts/segmenter_length.py [--steps 250 1000] [--seeds 0] [--n 500] [--n-val 300]
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace

import torch

from a2m_utils.study import experiments, segmenters
from a2m_utils.study.combination import Study
from a2m_utils.toy.sets import DEV_SEED0
from a2m_utils.toy.world import TOY, rendered, toy_prompts


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--steps", type=int, nargs="+", default=[250, 1000])
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--n", type=int, default=500)
    p.add_argument("--n-val", type=int, default=300)
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    study = Study()
    synthetic = study.generated(study.pipeline(), toy_prompts(a.n), study.settings(), "toy-main")
    train = {"real-supervised": ("supervised", study.real(a.n)),
             "attn2mask": ("supervised", synthetic), "attn2mask+BECO": ("beco", synthetic)}
    images, labels = rendered(range(DEV_SEED0 + 2 * 10**8, DEV_SEED0 + 2 * 10**8 + a.n_val))
    val = images, labels
    for steps in a.steps:
        config = replace(segmenters.SegConfig(), steps=steps)
        for seed in a.seeds:
            for name, (method, data) in train.items():
                t0 = time.time()
                got = experiments.score(segmenters.fit(method, data, TOY.num_classes, seed, config, name),
                                        val[0], val[1], TOY.num_classes)
                print(json.dumps({"steps": steps, "method": name, "seed": seed, "mIoU": round(got["miou"], 4),
                                  "seconds": round(time.time() - t0)}), flush=True)


if __name__ == "__main__":
    main()
