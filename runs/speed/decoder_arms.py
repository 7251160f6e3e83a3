"""Table 1's arms with a leaner toy segmenter decoder: real-supervised, plain and BECO (notebook 06's data,
pretrained encoder), one thread, one JSON line per training.

    python runs/speed/decoder_arms.py DECODER STEPS SEEDS METHODS [BECO_STEPS]
    e.g. python runs/speed/decoder_arms.py 32,16,8 500 0,1 real,plain,beco 1000
"""
import json, sys, time
from dataclasses import replace

import torch

from a2m_utils import registry
from a2m_utils.study import experiments, segmenters
from a2m_utils.study.combination import Study


def main() -> None:
    torch.set_num_threads(1)
    decoder, steps = tuple(int(c) for c in sys.argv[1].split(",")), int(sys.argv[2])
    seeds, methods = [int(s) for s in sys.argv[3].split(",")], sys.argv[4].split(",")
    beco_steps = int(sys.argv[5]) if len(sys.argv) > 5 else None
    study = Study()
    pipe = study.pipeline()
    settings = study.settings(num_steps=20, guidance_scale=2.0, beta=0.0, r=0.6)
    syn = study.generated(pipe, study.prompt_list(500), settings, "toy-main")
    val = study.val(500)
    arch = {**registry.segmenter("toy"), "decoder_channels": decoder}
    config = replace(segmenters.SegConfig(), steps=steps, beco_steps=beco_steps, arch=tuple(arch.items()))
    for m in methods:
        for seed in seeds:
            t0 = time.time()
            data = study.real(500) if m == "real" else syn
            f = segmenters.fit("beco" if m == "beco" else "supervised", data, study.num_classes, seed, config,
                                cache=None, desc=m)
            miou = experiments.score(f, *val[:2], study.num_classes)["miou"]
            print(json.dumps({"decoder": decoder, "method": m, "steps": config.steps_of("beco" if m == "beco" else "x"),
                              "seed": seed, "miou": round(miou, 4), "s": round(time.time() - t0)}), flush=True)


if __name__ == "__main__":
    main()
