"""Null-text inversion, one image at a time vs a batch, in the toy world (notebook 04's settings).

Both runs invert the same rendered images with their true captions, in one process: the
speed-up is time per image alone / time per image in batches.

    python benchmarks/nti_batching.py [--n 20] [--batch-size 20] [--threads 2]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from a2m_utils.nti import invert
from a2m_utils.toy import load_toy
from a2m_utils.toy.world import make_sample


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n", type=int, default=20)
    p.add_argument("--batch-size", type=int, default=20)
    p.add_argument("--num-steps", type=int, default=10)
    p.add_argument("--inner-steps", type=int, default=10)
    p.add_argument("--threads", type=int, default=0)
    a = p.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    pipe = load_toy()
    samples = [make_sample(10**6 + i) for i in range(a.n)]
    kw = {"num_steps": a.num_steps, "guidance_scale": 3.0, "inner_steps": a.inner_steps}
    invert(pipe, samples[0].image[None], [samples[0].caption], **kw)  # untimed warm-up
    t0 = time.perf_counter()
    alone = [invert(pipe, s.image[None], [s.caption], **kw)[0] for s in samples]
    alone_s = (time.perf_counter() - t0) / a.n
    t0 = time.perf_counter()
    batched = []
    for i in range(0, a.n, a.batch_size):
        chunk = samples[i:i + a.batch_size]
        batched += invert(pipe, np.stack([s.image for s in chunk]), [s.caption for s in chunk], **kw)
    batch_s = (time.perf_counter() - t0) / a.n
    gap = max(abs(x.nti_error - y.nti_error) for x, y in zip(alone, batched))
    print(f"toy world, {a.n} images, {a.num_steps} DDIM steps x {a.inner_steps} inner steps, "
          f"{torch.get_num_threads()} threads")
    print(f"one at a time: {alone_s:.2f} s/image; batches of {a.batch_size}: {batch_s:.2f} s/image; "
          f"speed-up {alone_s / batch_s:.1f}x; largest reconstruction-error gap {gap:.1e}")


if __name__ == "__main__":
    main()
