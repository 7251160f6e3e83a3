"""Does BECO converge in fewer steps at a higher learning rate? BECO on notebook 06's generated dataset
(pretrained toy encoder, Adam, poly schedule), scored on its 500 validation images; one thread, one JSON
line per training.

    python runs/speed/beco_schedule.py LR STEPS SEEDS     e.g. python runs/speed/beco_schedule.py 6e-3 500 0,1
"""
import json, sys, time
from dataclasses import replace

import torch

from a2m_utils.study import experiments, segmenters
from a2m_utils.study.combination import Study


def main() -> None:
    torch.set_num_threads(1)
    lr, steps, seeds = float(sys.argv[1]), int(sys.argv[2]), [int(s) for s in sys.argv[3].split(",")]
    study = Study()
    syn = study.generated(study.pipeline(), study.prompt_list(500),
                          study.settings(num_steps=20, guidance_scale=2.0, beta=0.0, r=0.6), "toy-main")
    val = study.val(500)
    config = replace(experiments.seg_config("toy", steps, 32, lr, "adam", False))
    for seed in seeds:
        t0 = time.time()
        f = segmenters.fit("beco", syn, study.num_classes, seed, config, cache=None)
        miou = experiments.score(f, *val[:2], study.num_classes)["miou"]
        print(json.dumps({"lr": lr, "steps": steps, "seed": seed, "miou": round(miou, 4), "s": round(time.time() - t0)}),
              flush=True)


if __name__ == "__main__":
    main()
