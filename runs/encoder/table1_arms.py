"""Table 1's arms with the pretrained encoder: plain and BECO on the generated main dataset (notebook 06's).

    python runs/encoder/table1_arms.py THREADS ENCODER STEPS SEEDS METHODS [SAMPLER_STEPS]
SAMPLER_STEPS: the dataset's DDIM steps, 20 (the preset until session 12) unless given; the preset's is now 14."""
import sys, json, time
from dataclasses import replace
import torch
from a2m_utils.study import experiments, segmenters
from a2m_utils.study.combination import Study
from a2m_utils import segmentation
torch.set_num_threads(int(sys.argv[1]))
enc, steps, seeds, methods = sys.argv[2], int(sys.argv[3]), [int(s) for s in sys.argv[4].split(",")], sys.argv[5].split(",")
study = Study()
pipe = study.pipeline()
settings = study.settings(num_steps=int(sys.argv[6]) if len(sys.argv) > 6 else 20, guidance_scale=2.0, beta=0.0, r=0.6)
syn = study.generated(pipe, study.prompt_list(500), settings, "toy-main")
val = study.val(500)
arch = dict(segmentation.TOY)
if enc != "none": arch["encoder_weights"] = enc
config = replace(segmenters.SegConfig(), steps=steps, arch=tuple(arch.items()))
for m in methods:
    for seed in seeds:
        t0 = time.time()
        data = study.real(500) if m == "real" else syn
        f = segmenters.fit("beco" if m == "beco" else "supervised", data, study.num_classes, seed, config, cache=None, desc=m)
        print(json.dumps({"enc": enc, "sampler_steps": settings.num_steps, "method": m, "steps": steps, "seed": seed, "miou": round(experiments.score(f, *val[:2], study.num_classes)["miou"], 4), "s": round(time.time() - t0)}), flush=True)
