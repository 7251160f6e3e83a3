"""Null-text inversion split across processes: one process on 2 threads inverting B images, against
two single-thread processes inverting B/2 each at once. ``python runs/speed/nti_processes.py THREADS B``.
Times the DDIM inversion and 3 DDIM steps of null-text optimisation (from z_3 to z_0, 10 inner steps each)."""
import sys
import time

import torch

from a2m_utils import nti
from a2m_utils.latents import image_size as image_size_of
from a2m_utils.latents import to_latents
from a2m_utils.study.combination import Study
from a2m_utils.trace import autocast

threads, n = int(sys.argv[1]), int(sys.argv[2])
torch.set_num_threads(threads)
study = Study("toy", None, None, "toy", None, "toy", "toy", None, None)
pipe = study.pipeline()
images, prompts = study.with_(image_size=image_size_of(pipe)).real(n).arrays()[0], study.captions(n)
with autocast(pipe, "bf16"):
    t0 = time.time()
    trajectory = nti.ddim_invert(pipe, to_latents(pipe, images), prompts, 10)
    t1 = time.time()
    nti.null_text_optimise(pipe, trajectory[:4], prompts, 2.0, 10)
    t2 = time.time()
print(f"threads {threads}, batch {n}: invert {t1 - t0:.1f} s, 3x10 inner steps {t2 - t1:.1f} s", flush=True)
