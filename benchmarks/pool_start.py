"""What a ``segmenters.fit_all`` pool costs to start: two workers, each training one segmenter for one
step, started by spawn (``fit_all``'s) and by fork, twice each in turn, from a process that has
imported the study and used torch, as a notebook's kernel has.

    python benchmarks/pool_start.py
"""

from __future__ import annotations

import multiprocessing as mp
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import torch

from a2m_utils.study import segmenters


def main() -> None:
    # The study is imported here, not at the top: spawn re-imports the main module in every worker, and a
    # kernel's main module imports nothing of the kit.
    from a2m_utils.study import experiments  # noqa: F401

    torch.ones(64, 64) @ torch.ones(64, 64)
    rng = np.random.default_rng(0)
    data = (rng.integers(0, 255, (8, 32, 32, 3), dtype=np.uint8), rng.integers(0, 3, (8, 32, 32), dtype=np.uint8),
            np.ones((8, 32, 32), bool))
    config = segmenters.SegConfig(steps=1, batch_size=4)
    for _ in range(2):
        for method in ("spawn", "fork"):
            with tempfile.TemporaryDirectory() as tmp:
                runs = [("supervised", data, 3, s, config, f"job {s}", "cpu", Path(tmp) / f"{s}.pt") for s in range(2)]
                t0 = time.perf_counter()
                with ProcessPoolExecutor(2, mp_context=mp.get_context(method),
                                         initializer=segmenters._quiet_phases) as pool:
                    list(pool.map(segmenters._train_job, runs))
                print(f"{method}: {time.perf_counter() - t0:.2f} s", flush=True)


if __name__ == "__main__":
    main()
