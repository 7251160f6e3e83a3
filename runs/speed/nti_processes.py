"""Null-text inversion split across processes: one process on 2 threads inverting B images, against
two single-thread processes inverting B/2 each at once. ``python runs/speed/nti_processes.py THREADS B``."""
import sys, time

import torch
threads, n = int(sys.argv[1]), int(sys.argv[2])
torch.set_num_threads(threads)
from a2m_utils import nti
from a2m_utils.latents import to_latents, image_size as image_size_of
from a2m_utils.study.combination import Study
from a2m_utils.trace import autocast
study = Study("toy", None, None, "toy", None, "toy", "toy", None, None)
pipe = study.pipeline()
s = study.with_(image_size=image_size_of(pipe))
images = s.real(n).arrays()[0]; prompts = study.captions(n)
with autocast(pipe, "bf16"):
    t0 = time.time()
    traj = nti.ddim_invert(pipe, to_latents(pipe, images), prompts, 10)
    t1 = time.time()
    nulls = nti.null_text_optimise(pipe, traj[:4], prompts, 2.0, 10)  # 3 DDIM steps x 10 inner steps
    t2 = time.time()
print(f"threads {threads}, batch {n}: invert {t1-t0:.1f} s, 3x10 inner steps {t2-t1:.1f} s", flush=True)
