"""How many of notebook 04's 160 images are still optimised at each inner null-text step (early stop):
nti.null_text_optimise's loop, repeated with a count. ``python runs/speed/nti_early_stop.py``."""
import time

import numpy as np
import torch

from a2m_utils import nti
from a2m_utils.latents import image_size as image_size_of
from a2m_utils.latents import to_latents
from a2m_utils.study.combination import Study
from a2m_utils.trace import autocast

study = Study("toy", None, None, "toy", None, "toy", "toy", None, None)
pipe = study.pipeline()
at_size = study.with_(image_size=image_size_of(pipe))
train, val = at_size.real(100).arrays(), at_size.val(60)
images, prompts = np.concatenate([train[0], val[0]]), study.captions(100) + study.captions(60, "val")
t0 = time.time()
with autocast(pipe, "bf16"):
    traj = nti.ddim_invert(pipe, to_latents(pipe, images), prompts, 10)
    sched, _ = nti.schedulers(pipe, 10)
    with torch.no_grad():
        cond, null = nti.embed(pipe, prompts).float(), nti.embed(pipe, [""] * len(prompts)).float()
    latent = traj[-1]
    for i, t in enumerate(sched.timesteps):
        target = traj[10 - i - 1]
        with torch.no_grad():
            eps_cond = nti._eps(pipe, latent, t, cond)
        null = null.detach().clone().requires_grad_(True)
        opt = torch.optim.Adam([null], lr=1e-2 * (1 - i / 100))
        active, row = torch.ones(len(prompts), dtype=torch.bool), []
        for _ in range(10):
            step = nti._guided_step(pipe, sched, latent, t, null, eps_cond, 2.0)
            loss = (step - target).pow(2).flatten(1).mean(1)
            (null.grad,) = torch.autograd.grad(loss.sum(), null)
            before = null.detach().clone()
            opt.step()
            with torch.no_grad():
                null.copy_(torch.where(active[:, None, None], null, before))
            active &= loss.detach() >= 1e-5 + i * 2e-5
            row.append(int(active.sum()))
            if not active.any():
                break
        print(f"DDIM step {i}: images still optimised after each inner step {row}; {time.time() - t0:.0f} s", flush=True)
        with torch.no_grad():
            latent = nti._guided_step(pipe, sched, latent, t, null, eps_cond, 2.0)
