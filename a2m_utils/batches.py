"""The kit's one seeded batch sampler: each epoch visits every item once, in an order fixed by
(seed, epoch), so a batch depends only on (seed, step) and a resumed run sees the same batches."""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache

import numpy as np


def batch_indices(n: int, batch_size: int, seed: int = 0) -> Callable[[int], np.ndarray]:
    """step -> the ``batch_size`` item indices (< ``n``) of that step."""
    if n < 1 or batch_size < 1:
        raise ValueError(f"need at least one item and a batch size of at least 1, got n={n}, batch_size={batch_size}")
    order = lru_cache(maxsize=2)(lambda epoch: np.random.default_rng([seed, epoch]).permutation(n))

    def indices(step: int) -> np.ndarray:
        k = np.arange(step * batch_size, (step + 1) * batch_size)
        return np.array([order(e)[i] for e, i in zip(k // n, k % n)])
    return indices


def array_batches(arrays: tuple[np.ndarray, ...], batch_size: int, seed: int = 0
                  ) -> Callable[[int], tuple[np.ndarray, ...]]:
    """step -> the same items of every array (images, labels, reliability, ...) for that step."""
    indices = batch_indices(len(arrays[0]), batch_size, seed)
    return lambda step: tuple(x[indices(step)] for x in arrays)
