"""An oracle for measurement only: a segmenter trained on rendered toy images with exact
ground truth, used to score pseudo-masks of *generated* images and prompt fidelity.

It is trained with random backgrounds and jittered object colours, so that it copes with
the drift of generated images. It never feeds the pipeline: pseudo-masks come from
attention alone.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from scipy import ndimage

from .. import segmentation
from ..metrics import confusion_matrix, scores
from . import world as toyworld
from .world import TOY

ORACLE_DEFAULT = Path(__file__).resolve().parents[2] / "models" / "toy-oracle"
MIN_COMPONENT = 6  # pixels: smaller blobs are not counted as objects


def augmented(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A rendered sample with a random background gradient (60%), jittered object colours and noise."""
    rng = np.random.default_rng([seed, 7])
    s = toyworld.make_sample(seed, max_objects=3)
    inst = toyworld.instance_map(s.scene.objects, s.image.shape[0])
    image = s.image.astype(np.float32)
    if rng.random() < 0.6:
        a, b = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
        ramp = np.linspace(0, 1, image.shape[0])[:, None, None]
        image[inst == 0] = (a + (b - a) * ramp * np.ones_like(image))[inst == 0]
    for i in range(len(s.scene.objects)):
        image[inst == i + 1] += rng.normal(0, 25, 3)
    image += rng.normal(0, rng.uniform(0, 12), image.shape)
    return np.clip(image, 0, 255).astype(np.uint8), s.label


ARCH = {"arch": "Unet", "encoder_name": "resnet18", "encoder_depth": 4, "decoder_channels": (128, 64, 32, 16)}


def build_oracle(seed: int = 0) -> torch.nn.Module:
    """The oracle's network (``segmentation.build`` drops the encoder stage its depth leaves unused)."""
    return segmentation.build(TOY.num_classes, seed=seed, **ARCH)


def train_oracle(steps: int = 1500, batch_size: int = 32, seed: int = 0) -> torch.nn.Module:
    model = build_oracle(seed)

    def batches(step: int):
        pairs = [augmented(seed * 10**7 + step * batch_size + i) for i in range(batch_size)]
        return np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs])

    segmentation.train_supervised(model, batches, steps, optimizer="adam", lr=1e-3, desc="oracle")
    return model


def load_or_train_oracle(path: Path = ORACLE_DEFAULT, **kwargs) -> torch.nn.Module:
    """The cached oracle at ``path`` (float16 weights), trained and saved there first if missing."""
    weights = Path(path) / "model.safetensors"
    if not weights.exists():
        weights.parent.mkdir(parents=True, exist_ok=True)
        state = train_oracle(**kwargs).state_dict()
        save_file({k: v.half() if v.is_floating_point() else v for k, v in state.items()}, weights)
    model = build_oracle()
    model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in load_file(weights).items()})
    return model.eval()


def object_counts(label: np.ndarray) -> dict[str, int]:
    """Connected components of at least ``MIN_COMPONENT`` pixels per class in a label map."""
    counts = {}
    for cid in range(1, TOY.num_classes):
        comps, _ = ndimage.label(label == cid)
        sizes = np.bincount(comps.ravel())[1:]
        if (k := int((sizes >= MIN_COMPONENT).sum())):
            counts[TOY.names[cid]] = k
    return counts


def fidelity(pred: np.ndarray, prompted: dict[str, int]) -> tuple[bool, bool]:
    """(every prompted class is found, the objects found are exactly the prompted ones and counts)."""
    found = object_counts(pred)
    return set(prompted) <= set(found), found == prompted


def prompted_counts(scene: toyworld.Scene) -> dict[str, int]:
    """The objects a toy caption asks for, per class name."""
    return dict(Counter(o.shape for o in scene.objects))


def check_generation(truth: np.ndarray, labels: Sequence[np.ndarray], scenes: Sequence[toyworld.Scene]) -> dict:
    """Pseudo-masks ``labels`` of generated images scored against the oracle's masks ``truth`` of
    the same images, and prompt fidelity against the ``scenes`` whose captions made them: mIoU and
    per-class IoU (all images, and where every prompted class is found), the share of images with
    every prompted class found, and with exactly the prompted objects."""
    found, exact = map(np.array, zip(*(fidelity(t, prompted_counts(s)) for t, s in zip(truth, scenes, strict=True))))
    conf = np.stack([confusion_matrix(p, t, TOY.num_classes) for p, t in zip(labels, truth, strict=True)])
    everything = scores(conf.sum(0))
    return {"miou": everything["miou"], "iou": everything["iou"],
            "miou_where_all_found": scores(conf[found].sum(0))["miou"],
            "all_found": float(found.mean()), "exact": float(exact.mean())}
