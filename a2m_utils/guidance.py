"""Classifier-free guidance (Ho & Salimans 2022), the one formula the kit's own loops use."""

from __future__ import annotations

import torch


def guide(eps_uncond: torch.Tensor, eps_cond: torch.Tensor, scale: float) -> torch.Tensor:
    """eps = eps_uncond + scale * (eps_cond - eps_uncond); diffusers turns guidance on when scale > 1."""
    return eps_uncond + scale * (eps_cond - eps_uncond)
