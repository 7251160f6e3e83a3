"""Turns oneDNN off in every Python process started with this folder on PYTHONPATH (benchmarks/kernel_band.sh)."""

import torch

torch.backends.mkldnn.enabled = False
