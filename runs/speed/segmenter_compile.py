"""One toy-segmenter training step (batch 32 of 32x32 images, bf16 autocast, Adam, one thread),
eager or under torch.compile; output in segmenter_compile.txt.

    python runs/speed/segmenter_compile.py eager|compile
"""
import sys
import time

import torch
import torch.nn.functional as F

from a2m_utils import registry, segmentation

registry.load_plugins()
torch.set_num_threads(1)
mode = sys.argv[1]
net = segmentation.build(6, **registry.segmenter("toy"))
model = torch.compile(net) if mode == "compile" else net
opt = torch.optim.Adam(net.parameters(), 3e-3)
x = torch.randn(32, 3, 32, 32).to(memory_format=torch.channels_last)
y = torch.randint(0, 6, (32, 32, 32))


def step() -> None:
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = F.cross_entropy(model(x).float(), y)
    opt.zero_grad()
    loss.backward()
    opt.step()


start = time.perf_counter()
step()
print(mode, "first step", round(time.perf_counter() - start, 1), "s", flush=True)
for _ in range(5):
    step()
start = time.perf_counter()
for _ in range(50):
    step()
print(mode, "s/step", round((time.perf_counter() - start) / 50, 4), flush=True)
