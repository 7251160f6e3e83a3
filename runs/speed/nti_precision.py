"""Null-text inversion in fp32 vs bf16 autocast: time, reconstruction error and pseudo-mask quality
(notebook 04's settings: 10 DDIM steps, 10 inner steps, guidance 2, beta 0) on 20 rendered training images."""
import json, sys, time
import numpy as np, torch
from a2m_utils.study import experiments
from a2m_utils.study.combination import Study
torch.set_num_threads(int(sys.argv[1]) if len(sys.argv) > 1 else 2)
study = Study()
pipe = study.pipeline()
train = study.real(20).arrays()
captions = study.captions(20)
for precision in sys.argv[2].split(","):
    t0 = time.perf_counter()
    with torch.autocast("cpu", torch.bfloat16, enabled=precision == "bf16"):
        inv, pm = experiments.inverted_masks(pipe, train[0], captions, study.vocab, 10, 2.0, 10, 0.0, batch_size=20)
    s = experiments.pseudo_mask_scores(study.to_eval(np.stack([m.label for m in pm])), train[1], study.num_classes)
    print(json.dumps({"precision": precision, "s": round(time.perf_counter() - t0, 1), "miou": round(s["miou"], 4),
                      "nti_mse": float(np.mean([i.nti_error for i in inv])), "ddim_mse": float(np.mean([i.ddim_error for i in inv]))}), flush=True)
