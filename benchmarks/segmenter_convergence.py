"""Is Table 1's segmenter converged? Real-supervised mIoU of notebook 06's default segmenter at N
steps and at 4N, with the same seeds, training images and validation set, measured in one run
(trainings found in ``data/segmenters`` are loaded, e.g. the N-step ones of a toy run; the others
train one per core, ``segmenters.fit_all``).

    python benchmarks/segmenter_convergence.py [--steps 500] [--seeds 0 1 2] [--factor 4]
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace

import numpy as np

from a2m_utils.study import experiments, segmenters
from a2m_utils.study.combination import Study


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--steps", type=int, default=500, help="N: notebook 06's seg_steps")
    p.add_argument("--factor", type=int, default=4)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--n", type=int, default=500, help="training and validation images (notebook 06's)")
    a = p.parse_args()
    study = Study()  # the toy world, as notebook 06 by default
    real, val = study.real(a.n), study.val(a.n)
    base = experiments.seg_config("toy", a.steps, 32, 3e-3, "adam", False)
    print(f"real-supervised on {a.n} rendered images, scored on {a.n}; {base}")
    scores = {}
    for steps in (a.steps, a.factor * a.steps):
        t0 = time.perf_counter()
        fits = segmenters.fit_all({f"seed {seed}": ("supervised", real, seed) for seed in a.seeds},
                                   study.num_classes, replace(base, steps=steps), study.device)
        for seed in a.seeds:
            scores[steps, seed] = experiments.score(fits[f"seed {seed}"], *val[:2], study.num_classes)["miou"]
            print(f"  {steps:5d} steps, seed {seed}: {scores[steps, seed]:.4f}", flush=True)
        print(f"  ({len(a.seeds)} trainings of {steps} steps: {time.perf_counter() - t0:.0f} s)", flush=True)
    n, m = (np.array([scores[s, k] for k in a.seeds]) for s in (a.steps, a.factor * a.steps))
    gap = m.mean() - n.mean()
    print(f"N = {a.steps}: {n.mean():.4f} +- {n.std(ddof=1) if len(n) > 1 else 0:.4f}; "
          f"{a.factor}N = {a.factor * a.steps}: {m.mean():.4f} +- {m.std(ddof=1) if len(m) > 1 else 0:.4f}; "
          f"gap {gap:+.4f} ({'within' if abs(gap) <= 0.02 else 'not within'} 0.02: "
          f"{'converged' if abs(gap) <= 0.02 else 'not converged'})")


if __name__ == "__main__":
    main()
