import time, torch, statistics, numpy as np
import a2m_utils.toy
from a2m_utils.toy.pipeline import load_toy
from a2m_utils import generate
from diffusers import DDIMScheduler
torch.set_num_threads(1)
pipe = load_toy(); pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config); pipe.set_progress_bar_config(disable=True)
prompts = ["a red circle and a blue square"] * 16
def run(mode):
    ctx = torch.autocast("cpu", dtype=torch.bfloat16) if "bf16" in mode else torch.autocast("cpu", enabled=False)
    pipe.unet.to(memory_format=torch.channels_last if "cl" in mode else torch.contiguous_format)
    t0 = time.perf_counter()
    with ctx:
        t = generate(pipe, prompts, list(range(16)), steps=None, self_attention_res=16, num_inference_steps=20, guidance_scale=2.0)
    return time.perf_counter() - t0, t.attention(), t.images
modes = ["fp32", "cl", "bf16", "bf16cl"]
res = {m: [] for m in modes}; out = {}
for _ in range(3):
    for m in modes:
        s, a, im = run(m); res[m].append(s); out[m] = (a, im)
base = statistics.median(res["fp32"])
for m in modes:
    a, im = out[m]
    print(m, f"{statistics.median(res[m]):.2f} s", f"{statistics.median(res[m])/base:.2f}",
          "attn maxdiff", float(np.abs(a - out["fp32"][0]).max()), "img meandiff", float(np.abs(im.astype(int) - out["fp32"][1]).mean()))
