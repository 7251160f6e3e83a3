import time, torch, statistics
import torch.nn.functional as F
from a2m_utils import segmentation
torch.set_num_threads(1)
torch.manual_seed(0)
x = torch.randn(32, 3, 32, 32); y = torch.randint(0, 6, (32, 32, 32))
def make(): 
    m = segmentation.build(6, **segmentation.TOY); return m, torch.optim.Adam(m.parameters(), 3e-3)
arms = {"fp32": make(), "bf16": make(), "bf16-cl": make()}
arms["bf16-cl"][0].to(memory_format=torch.channels_last)
def step(name):
    m, opt = arms[name]
    xx = x.to(memory_format=torch.channels_last) if name.endswith("cl") else x
    t0 = time.perf_counter()
    ctx = torch.autocast("cpu", dtype=torch.bfloat16) if name.startswith("bf16") else torch.autocast("cpu", enabled=False)
    with ctx:
        out = m(xx)
    loss = F.cross_entropy(out.float(), y)
    opt.zero_grad(); loss.backward(); opt.step()
    return time.perf_counter() - t0
for n in arms: step(n); step(n)
times = {n: [] for n in arms}
for _ in range(15):
    for n in arms: times[n].append(step(n))
base = statistics.median(times["fp32"])
for n, t in times.items(): print(n, f"{statistics.median(t)*1000:.1f} ms", f"{statistics.median(t)/base:.2f}")
