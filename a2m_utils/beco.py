"""BECO (Rong et al. CVPR 2023), trained on attn2mask pseudo-labels with the reliability map R
of Eq. 6, as its official training code behaves: two co-trained networks, a loss that trusts the
labels on reliable pixels and the peer network on the others, and boundary-enhanced ClassMix.
Test: the two networks' logits averaged. Under ``accelerate launch`` it trains data-parallel: every
process prepares and mixes the whole batch (mixing pairs images across it), then trains on its share.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from accelerate import Accelerator
from torchvision.transforms.v2 import functional as TF

from .classes import IGNORE_INDEX
from .images import to_tensor
from .phases import phase
from .segmentation import (Precision, augment, build, device_of, make_optimizer, poly_schedule, predict, run_steps,
                           share, step_rng, sync_batch_norm)

BOUNDARY_WEIGHT = 0.2
# step -> (images uint8 NHWC, pseudo-labels NHW uint8, reliability NHW bool)
BecoBatches = Callable[[int], tuple[np.ndarray, np.ndarray, np.ndarray]]


def build_pair(num_classes: int, seed: int = 0, **arch) -> tuple[torch.nn.Module, torch.nn.Module]:
    """Two ``segmentation.build`` networks with the same encoder init and different decoder inits."""
    net_a, net_b = build(num_classes, seed=seed, **arch), build(num_classes, seed=seed + 1, **arch)
    net_b.encoder.load_state_dict(net_a.encoder.state_dict())
    return net_a, net_b


def boundary_band(mask: torch.Tensor, k: int = 3) -> torch.Tensor:
    """dilate(mask) - erode(mask) with a k x k window: the band around a (B, H, W) paste mask, float."""
    m = mask.float()[:, None]
    dilated = F.max_pool2d(m, k, stride=1, padding=k // 2)
    eroded = -F.max_pool2d(-m, k, stride=1, padding=k // 2)
    return (dilated - eroded)[:, 0]


def beco_loss(logits_a: torch.Tensor, logits_b: torch.Tensor, label: torch.Tensor, reliable: torch.Tensor,
              boundary: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per network k with peer k': CE(o_k, y) on reliable pixels weighted 1 + 0.2 * boundary, and
    CE(o_k, argmax o_k', detached) on unreliable ones; each averaged over all pixels (masked and
    ignore-labelled pixels count zero). Returns the four terms and their sum, ``total``."""
    label = label.long()
    keep = label != IGNORE_INDEX
    w_sup = (reliable & keep) * (1 + BOUNDARY_WEIGHT * boundary)
    w_cot = (~reliable & keep).float()

    def ce(logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        return (F.cross_entropy(logits, target.masked_fill(~keep, 0), reduction="none") * weight).mean()

    terms = {
        "sup_a": ce(logits_a, label, w_sup),
        "sup_b": ce(logits_b, label, w_sup),
        "cot_a": ce(logits_a, logits_b.detach().argmax(1), w_cot),
        "cot_b": ce(logits_b, logits_a.detach().argmax(1), w_cot),
    }
    return terms | {"total": sum(terms.values())}


def online_labels(logits_a: torch.Tensor, logits_b: torch.Tensor, threshold: float = 0.95,
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """Labels of the averaged softmax of both networks, and where its confidence exceeds ``threshold``."""
    conf, label = ((logits_a.softmax(1) + logits_b.softmax(1)) / 2).max(1)
    return label, conf > threshold


def class_mix(images: torch.Tensor, labels: torch.Tensor, reliable: torch.Tensor, rng: np.random.Generator,
              p: float = 0.5) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """ClassMix over the pairs i <-> i + B/2: with probability ``p``, image i receives about half
    (rounded up) of the foreground classes that its partner has on reliable pixels, pasted with
    their labels and reliability. Returns the mixed images, labels, reliability and the paste
    mask (B, H, W) bool, all False for an image left unmixed."""
    b, half = len(images), len(images) // 2
    partner = (torch.arange(b, device=labels.device) + half) % b
    paste = torch.zeros_like(labels, dtype=torch.bool)
    for i in np.flatnonzero(rng.random(b) < p):
        j = (i + half) % b
        classes = labels[j][reliable[j]].unique()
        classes = classes[(classes != 0) & (classes != IGNORE_INDEX)]
        if j != i and len(classes):
            chosen = classes[torch.from_numpy(rng.permutation(len(classes))[:(len(classes) + 1) // 2])]
            paste[i] = torch.isin(labels[j], chosen)
    images = torch.where(paste[:, None], images[partner], images)
    return images, torch.where(paste, labels[partner], labels), torch.where(paste, reliable[partner], reliable), paste


def photometric(images: torch.Tensor, rng: np.random.Generator, strength: float = 0.4) -> torch.Tensor:
    """Colour jitter of (B, 3, H, W) images in [-1, 1]: brightness, contrast and saturation factors
    drawn per image from 1 +- ``strength``."""
    factors = rng.uniform(1 - strength, 1 + strength, (len(images), 3)).tolist()
    out = [TF.adjust_saturation(TF.adjust_contrast(TF.adjust_brightness(x, b), c), s)
           for x, (b, c, s) in zip((images + 1) / 2, factors)]
    return torch.stack(out) * 2 - 1


def _mixed_batch(net_a: torch.nn.Module, net_b: torch.nn.Module, x: torch.Tensor, y: torch.Tensor,
                 m: torch.Tensor, rng: np.random.Generator, online: bool, threshold: float,
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Boundary-enhanced mixing: after warm-up (``online``), mixed images take the online labels and
    confidence masks of both networks in eval mode and get the paste mask's boundary band; unmixed
    ones keep the offline labels. During warm-up the mix uses the offline labels, no boundary."""
    if not online:
        x, y, m, _ = class_mix(x, y, m, rng)
        return x, y, m, torch.zeros_like(y, dtype=torch.float)
    with torch.no_grad():
        net_a.eval()
        net_b.eval()
        y_on, m_on = online_labels(net_a(x), net_b(x), threshold)
    net_a.train()
    net_b.train()
    x, y_mix, m_mix, paste = class_mix(x, y_on, m_on, rng)
    mixed = paste.flatten(1).any(1)[:, None, None]
    return x, torch.where(mixed, y_mix, y), torch.where(mixed, m_mix, m), boundary_band(paste)


@phase("segmenter training")
def train_beco(net_a: torch.nn.Module, net_b: torch.nn.Module, batches: BecoBatches, steps: int, warmup: int,
               lr: float = 0.01, momentum: float = 0.9, weight_decay: float = 1e-4, threshold: float = 0.95,
               augmentation: bool = True, jitter: float = 0.0, seed: int = 0, ckpt: Path | None = None,
               ckpt_every: int = 100, stop_after: int | None = None, desc: str = "BECO",
               optimizer: str = "sgd", mixed_precision: bool = True, min_lr: float = 0.0,
               accelerator: Accelerator | None = None) -> list[dict]:
    """Co-train ``net_a`` and ``net_b`` (``build_pair``) with one SGD optimiser and the poly schedule
    (``segmentation.poly_schedule``, down to ``min_lr``) on ``beco_loss``; mixing as in ``_mixed_batch``
    after ``warmup`` steps (BECO: one epoch); crop-and-flip ``augment`` of images, labels and
    reliability, and ``photometric`` jitter of strength ``jitter`` (0: none) after mixing;
    ``segmentation.Precision(mixed=mixed_precision)``. With ``ckpt``, resumes from and saves to that file
    (both networks, optimiser, scheduler, step). With an ``accelerator`` (``segmentation.data_parallel``),
    ``batches`` serve whole batches, each process trains on its share of the mixed batch, and the
    networks train under DDP with ``segmentation.sync_batch_norm``. Returns the loss terms of every step."""
    if accelerator:
        sync_batch_norm(net_a)
        sync_batch_norm(net_b)
    device = accelerator.device if accelerator else device_of(net_a)
    precision = Precision(device, mixed_precision)
    opt = make_optimizer([*net_a.parameters(), *net_b.parameters()], optimizer, lr, weight_decay, momentum)
    sched = poly_schedule(opt, steps, min_lr)
    parts = {"net_a": net_a, "net_b": net_b, "opt": opt, "sched": sched, **precision.parts()}
    config = {"steps": steps, "warmup": warmup, "lr": lr, "optimizer": optimizer, "momentum": momentum,
              "weight_decay": weight_decay, "threshold": threshold, "augmentation": augmentation, "jitter": jitter,
              "seed": seed, "mixed_precision": mixed_precision, "min_lr": min_lr}
    ddp_a, ddp_b, step_opt = accelerator.prepare(net_a, net_b, opt) if accelerator else (net_a, net_b, opt)

    def train_step(step: int) -> dict[str, float]:
        rng = step_rng(seed, step)
        images, labels, reliable = batches(step)
        if augmentation:
            images, labels, reliable = augment(images, labels, rng, extra=reliable)
        x, y, m = (to_tensor(images).to(device), torch.from_numpy(labels).long().to(device),
                   torch.from_numpy(reliable).bool().to(device))
        with precision.autocast():
            x, y, m, boundary = _mixed_batch(net_a, net_b, x, y, m, rng, step >= warmup, threshold)
        if jitter:
            x = photometric(x, rng, jitter)
        part = share(len(x), accelerator)
        x, y, m, boundary = x[part], y[part], m[part], boundary[part]
        with precision.autocast():
            terms = beco_loss(ddp_a(x).float(), ddp_b(x).float(), y, m, boundary)
        precision.step(terms["total"], step_opt)
        sched.step()
        return {k: (accelerator.reduce(v.detach(), "mean") if accelerator else v).item() for k, v in terms.items()}

    net_a.train()
    net_b.train()
    main = accelerator is None or accelerator.is_main_process
    history = run_steps(train_step, steps, parts, config, ckpt, ckpt_every, stop_after, desc, device, main)
    net_a.eval()
    net_b.eval()
    return history


class Ensemble(torch.nn.Module):
    """BECO's test: the two networks' logits averaged."""

    def __init__(self, net_a: torch.nn.Module, net_b: torch.nn.Module) -> None:
        super().__init__()
        self.net_a, self.net_b = net_a, net_b

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (self.net_a(x) + self.net_b(x)) / 2


def predict_ensemble(net_a: torch.nn.Module, net_b: torch.nn.Module, images: np.ndarray,
                     batch_size: int = 64) -> np.ndarray:
    """Label maps (N, H, W) uint8 from the averaged logits of both networks, for uint8 images (N, H, W, 3)."""
    return predict(Ensemble(net_a, net_b), images, batch_size)
