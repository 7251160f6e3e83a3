"""Null-text inversion's inner step (one guided DDIM step with its backward to the null embedding) per image,
fp32 vs bf16 autocast, at batch 20 to 160, on 2 threads (the toy pipeline, notebook 04's 10 DDIM steps).

    python runs/speed/nti_batch.py
"""
import time, torch
from a2m_utils import nti
from a2m_utils.study.combination import Study
torch.set_num_threads(2)
study = Study(); pipe = study.pipeline()
sched,_ = nti.schedulers(pipe, 10)
t = sched.timesteps[3]
for B in (20, 40, 80, 160):
    lat = torch.randn(B, pipe.unet.config.in_channels, pipe.unet.config.sample_size, pipe.unet.config.sample_size)
    cond = nti.embed(pipe, ["a red circle"]*B).float()
    null = nti.embed(pipe, [""]*B).float().requires_grad_(True)
    with torch.no_grad(): ec = nti._eps(pipe, lat, t, cond)
    for prec in ("fp32","bf16"):
        ts=[]
        for r in range(4):
            t0=time.perf_counter()
            with torch.autocast("cpu", torch.bfloat16, enabled=prec=="bf16"):
                step = nti._guided_step(pipe, sched, lat, t, null, ec, 2.0)
                loss = step.pow(2).mean()
            g, = torch.autograd.grad(loss, null)
            ts.append(time.perf_counter()-t0)
        print(B, prec, f"{min(ts[1:])/B*1000:.2f} ms/image-iter", flush=True)
