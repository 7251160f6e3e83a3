"""How long does each of Table 1's arms train before it stops gaining? Real-supervised, plain attn2mask
and BECO segmenters of notebook 06 (the toy world's 500 generated and 500 rendered training images,
the pretrained toy encoder), trained for the given steps and seeds and scored on notebook 06's 500
validation images. One JSON line per training (each on one thread, as in the study; run two
processes at once on two cores).

    python benchmarks/beco_length.py --methods beco --steps 750 1000 --seeds 0 1 2 [--sampler-steps 14]
"""

from __future__ import annotations

import argparse
import json
import time

from a2m_utils.study import experiments, segmenters
from a2m_utils.study.combination import Study

METHODS = {"real": "supervised", "plain": "supervised", "beco": "beco"}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--methods", nargs="+", choices=list(METHODS), default=["plain", "beco"])
    p.add_argument("--steps", type=int, nargs="+", default=[500, 750, 1000])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--sampler-steps", type=int, default=14, help="DDIM steps of the generated dataset (the preset's)")
    a = p.parse_args()
    study = Study()  # the toy world, as notebook 06 by default
    settings = study.settings(num_steps=a.sampler_steps, guidance_scale=2.0, beta=0.0, r=0.6)
    synthetic = study.generated(study.pipeline(), study.prompt_list(500), settings, "toy-main")
    data, val = {"real": study.real(500), "plain": synthetic, "beco": synthetic}, study.val(500)
    for steps in a.steps:
        config = experiments.seg_config("toy", steps, 32, 3e-3, "adam", False)
        for method in a.methods:
            for seed in a.seeds:
                t0 = time.perf_counter()
                fitted = segmenters.fit(METHODS[method], data[method], study.num_classes, seed, config, method,
                                        study.device, cache=None)
                miou = experiments.score(fitted, *val[:2], study.num_classes)["miou"]
                print(json.dumps({"sampler_steps": a.sampler_steps, "method": method, "steps": steps, "seed": seed,
                                  "miou": round(miou, 4), "s": round(time.perf_counter() - t0)}), flush=True)


if __name__ == "__main__":
    main()
