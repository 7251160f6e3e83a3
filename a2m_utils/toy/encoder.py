"""The toy world's ImageNet: the toy segmenter's encoder, pretrained to name the shapes in rendered scenes.

The paper's segmenters start from an ImageNet-pretrained encoder (image-level class labels of other
images), never from scratch. The toy counterpart: the same small U-Net encoder (``segmentation.TOY``)
with a linear head, trained as a multi-label classifier (which of the five shapes a scene holds) on
source-domain scenes rendered from ``PRETRAIN_SEED0`` on, a seed range no training, validation or
development set uses; it never sees notebook 05's target domain (Table 4). Only the encoder is kept
(``models/toy-encoder/encoder.safetensors``); every segmenter of the toy study, real-supervised or
trained on pseudo-masks, starts from it.

    python scripts/pretrain_toy_encoder.py     # about 2 minutes on one core; deterministic
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import save as to_safetensors

from .. import segmentation
from ..atomic import write_bytes
from ..images import to_tensor
from . import world
from .world import TOY

PRETRAIN_SEED0 = 9 * 10**9
ENCODER_DEFAULT = Path(__file__).resolve().parents[2] / "models" / "toy-encoder"
WEIGHTS = ENCODER_DEFAULT / "encoder.safetensors"


def scenes(n: int, start: int = PRETRAIN_SEED0) -> tuple[np.ndarray, np.ndarray]:
    """``n`` rendered source-domain scenes and their multi-hot shape labels (N, 5)."""
    images, present = [], np.zeros((n, TOY.num_classes - 1), np.float32)
    for i, seed in enumerate(range(start, start + n)):
        s = world.make_sample(seed)
        images.append(s.image)
        present[i, [TOY.index(o.shape) - 1 for o in s.scene.objects]] = 1
    return np.stack(images), present


def _dihedral(x: torch.Tensor, k: int) -> torch.Tensor:
    """One of the square's eight symmetries (exact for scenes drawn at random angles)."""
    x = torch.rot90(x, k % 4, (2, 3))
    return x.flip(3) if k >= 4 else x


def pretrain(n_images: int = 20_000, steps: int = 1500, batch_size: int = 64, lr: float = 3e-3,
             seed: int = 0, n_val: int = 1000) -> tuple[dict[str, torch.Tensor], dict]:
    """The encoder's state dict after multi-label classification training (AdamW, one-cycle, bf16
    autocast on CPU), and a record: the share of held-out scenes whose shape set it names exactly."""
    images, present = scenes(n_images)
    model = segmentation.build(TOY.num_classes, seed=seed, **segmentation.TOY)
    encoder = model.encoder.to(memory_format=torch.contiguous_format)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        head = torch.nn.Linear(encoder.out_channels[-1], present.shape[1])
    classify = lambda x: head(encoder(x)[-1].mean((2, 3)).float())
    opt = torch.optim.AdamW([*encoder.parameters(), *head.parameters()], lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, lr, total_steps=steps, pct_start=0.1)
    rng = np.random.default_rng(seed)
    for _ in range(steps):
        idx = rng.integers(0, n_images, batch_size)
        with torch.autocast("cpu", torch.bfloat16):
            logits = classify(_dihedral(to_tensor(images[idx]), int(rng.integers(8))))
        loss = F.binary_cross_entropy_with_logits(logits, torch.from_numpy(present[idx]))
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    val_images, val_present = scenes(n_val, PRETRAIN_SEED0 + n_images)
    with torch.no_grad():
        named = (classify(to_tensor(val_images)) > 0).numpy() == (val_present > 0.5)
    record = {"n_images": n_images, "steps": steps, "batch_size": batch_size, "lr": lr, "seed": seed,
              "seeds": [PRETRAIN_SEED0, PRETRAIN_SEED0 + n_images], "final_loss": round(loss.item(), 4),
              "val_exact": float(named.all(1).mean()), "n_val": n_val}
    return encoder.state_dict(), record


def save(state: dict[str, torch.Tensor], record: dict, folder: Path = ENCODER_DEFAULT) -> Path:
    """Write ``encoder.safetensors`` and ``training.json`` into ``folder`` (each atomically)."""
    write_bytes(folder / "encoder.safetensors", to_safetensors({k: v.contiguous() for k, v in state.items()}))
    write_bytes(folder / "training.json", (json.dumps(record, indent=1) + "\n").encode())
    return folder / "encoder.safetensors"
