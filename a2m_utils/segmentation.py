"""Segmentation models from segmentation-models-pytorch: build, train (supervised), predict."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import segmentation_models_pytorch as smp
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from .classes import IGNORE_INDEX
from .images import to_tensor

# The paper's segmenter, and a small one that trains on 32x32 toy images on CPU.
PAPER = dict(arch="DeepLabV3Plus", encoder_name="resnet50")
TOY = dict(arch="Unet", encoder_name="mobilenet_v2", encoder_depth=3, decoder_channels=(64, 32, 16))


def build(num_classes: int, arch: str = "DeepLabV3Plus", encoder_name: str = "resnet50",
          encoder_weights: str | None = None, seed: int = 0, **kwargs) -> torch.nn.Module:
    """An smp model; ``encoder_weights`` None (the default) needs no download."""
    torch.manual_seed(seed)
    return smp.create_model(arch, encoder_name=encoder_name, encoder_weights=encoder_weights,
                            classes=num_classes, **kwargs)


Batches = Callable[[int], tuple[np.ndarray, np.ndarray]]  # step -> (images uint8 NHWC, labels NHW)


def train_supervised(model: torch.nn.Module, batches: Batches, steps: int, lr: float = 0.01,
                     weight_decay: float = 1e-4, momentum: float = 0.9, optimizer: str = "sgd",
                     desc: str = "segmenter") -> list[float]:
    """Cross-entropy ignoring 255 with the poly schedule (power 0.9); SGD as in the paper, or Adam.
    Returns the losses."""
    if optimizer == "sgd":
        opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)
    elif optimizer == "adam":
        opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    else:
        raise ValueError(f"unknown optimizer {optimizer!r}; expected 'sgd' or 'adam'")
    sched = torch.optim.lr_scheduler.PolynomialLR(opt, total_iters=steps, power=0.9)
    model.train()
    losses = []
    for step in tqdm(range(steps), desc=desc):
        images, labels = batches(step)
        logits = model(to_tensor(images))
        loss = F.cross_entropy(logits, torch.from_numpy(labels).long(), ignore_index=IGNORE_INDEX)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        losses.append(loss.item())
    model.eval()
    return losses


@torch.no_grad()
def predict(model: torch.nn.Module, images: np.ndarray, batch_size: int = 64) -> np.ndarray:
    """Label maps (N, H, W) uint8 for uint8 images (N, H, W, 3)."""
    model.eval()
    out = [model(to_tensor(images[i:i + batch_size])).argmax(1) for i in range(0, len(images), batch_size)]
    return torch.cat(out).byte().numpy()
