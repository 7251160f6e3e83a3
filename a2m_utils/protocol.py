"""mmsegmentation's supervised protocol for PASCAL VOC and Cityscapes (its configs
``deeplabv3plus_r50-d8_4xb4-20k_voc12aug-512x512`` and ``deeplabv3plus_r50-d8_512x1024_40k_cityscapes``),
for segmenters trained on real or generated images of those label spaces: training crops (random
rescale of a base scale keeping the aspect, random crop that no single class fills, flip, photometric
distortion, padding), the schedule's settings beyond steps, batch and learning rate, and inference on
each whole image at the base scale, scored at the image's own resolution.

Every random draw of a training item comes from a generator seeded with (seed, step, its place in the
batch): a run resumed at step s draws what an uninterrupted one did, and a data-parallel process that
prepares only its share of a batch draws what one process preparing all of it would.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields

import numpy as np
import torch
import torch.nn.functional as nnF
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

from .batches import batch_indices
from .classes import IGNORE_INDEX
from .images import to_tensor
from .segmentation import IMAGENET_MEAN

# mmsegmentation pads normalised images with 0: ImageNet's mean colour before normalising.
MEAN_COLOUR = tuple(round(255 * m) for m in IMAGENET_MEAN)
Item = tuple[np.ndarray, ...]  # image (H, W, 3) uint8, label (H, W) uint8[, reliability (H, W) bool]


@dataclass(frozen=True)
class Protocol:
    """The protocol's settings; the defaults are PASCAL VOC's (``PROTOCOLS``)."""

    scale: tuple[int, int] = (2048, 512)  # the base scale: an image is rescaled to fit (long edge, short edge)
    crop: tuple[int, int] = (512, 512)  # training crops (height, width)
    ratio: tuple[float, float] = (0.5, 2.0)  # the base scale's random factor in training
    cat_max_ratio: float = 0.75  # no class may fill this share of a crop's labelled pixels
    flip: float = 0.5
    size_divisor: int = 32  # inference pads the rescaled image to a multiple of this (the encoder's stride)
    weight_decay: float = 5e-4  # SGD's, with momentum 0.9
    min_lr: float = 1e-4  # the poly schedule's floor
    aux_weight: float = 0.4  # the auxiliary FCN head's loss weight (0: no auxiliary head)
    aux_dropout: float = 0.1  # the auxiliary head's dropout before its classifier


PROTOCOLS = {"voc": Protocol(), "cityscapes": Protocol(scale=(2048, 1024), crop=(512, 1024))}


def protocol(spec: str | Mapping | Protocol | None) -> Protocol | None:
    """A protocol by name ("voc", "cityscapes"), PASCAL VOC's with the fields a mapping changes (e.g. a
    profile's ``{scale: [128, 32], crop: [32, 32]}``), or None (none)."""
    if spec is None or isinstance(spec, Protocol):
        return spec
    if isinstance(spec, str):
        if spec not in PROTOCOLS:
            raise ValueError(f"unknown protocol {spec!r}; expected one of {sorted(PROTOCOLS)} or a mapping of "
                             f"Protocol fields")
        return PROTOCOLS[spec]
    names = {f.name for f in fields(Protocol)}
    if unknown := sorted(set(spec) - names):
        raise ValueError(f"unknown protocol fields {unknown}; expected some of {sorted(names)}")
    return Protocol(**{k: tuple(v) if isinstance(v, list) else v for k, v in spec.items()})


def rescaled(size: tuple[int, int], scale: tuple[float, float]) -> tuple[int, int]:
    """(height, width) of an image of ``size`` rescaled, keeping its aspect, to the largest size within
    ``scale`` (long edge, short edge), rounded as mmcv's ``imrescale``."""
    h, w = size
    f = min(max(scale) / max(h, w), min(scale) / min(h, w))
    return int(h * f + 0.5), int(w * f + 0.5)


def crop_box(label: np.ndarray, crop: tuple[int, int], rng: np.random.Generator,
             cat_max_ratio: float = 0.75, tries: int = 10) -> tuple[int, int, int, int]:
    """(top, left, height, width) of a random ``crop`` of a label map (smaller where the map is),
    drawn again, up to ``tries`` draws in all, while the crop has one class only or one class fills
    ``cat_max_ratio`` or more of its labelled pixels (255 ignored; mmsegmentation's RandomCrop)."""
    h, w = min(crop[0], label.shape[0]), min(crop[1], label.shape[1])
    for _ in range(tries if cat_max_ratio < 1 else 1):
        top, left = int(rng.integers(label.shape[0] - h + 1)), int(rng.integers(label.shape[1] - w + 1))
        values, counts = np.unique(label[top:top + h, left:left + w], return_counts=True)
        counts = counts[values != IGNORE_INDEX]
        if len(counts) > 1 and counts.max() / counts.sum() < cat_max_ratio:
            break
    return top, left, h, w


def _affine(image: torch.Tensor, alpha: float = 1.0, beta: float = 0.0) -> torch.Tensor:
    """``alpha * image + beta`` clipped to uint8 (mmsegmentation's ``convert``)."""
    return (image.float() * alpha + beta).clamp(0, 255).to(torch.uint8)


def photometric_distortion(image: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    """mmsegmentation's PhotoMetricDistortion of a uint8 (3, H, W) image, each step with probability
    1/2: brightness + U(-32, 32); contrast x U(0.5, 1.5), first or last at random; saturation x
    U(0.5, 1.5); hue + U{-18..18} on OpenCV's 180-step circle (torchvision's saturation and hue)."""
    if rng.integers(2):
        image = _affine(image, beta=rng.uniform(-32, 32))
    contrast_first = rng.integers(2)
    steps = [lambda x: _affine(x, alpha=rng.uniform(0.5, 1.5)),
             lambda x: F.adjust_saturation(x, rng.uniform(0.5, 1.5)),
             lambda x: F.adjust_hue(x, int(rng.integers(-18, 19)) / 180)]
    for step in steps if contrast_first else [*steps[1:], steps[0]]:
        if rng.integers(2):
            image = step(image)
    return image


def train_sample(item: Item, protocol: Protocol, rng: np.random.Generator) -> Item:
    """One training crop of an item (image, label[, reliability]): rescaled by a random factor of the
    base scale keeping its aspect (image bilinear, maps nearest), ``crop_box``, flipped, photometric
    distortion, padded to the crop size (image: ``MEAN_COLOUR``, maps: 255, so padding is ignored)."""
    image, *maps = item
    sample = (tv_tensors.Image(torch.from_numpy(np.array(image)).permute(2, 0, 1)),
              *(tv_tensors.Mask(torch.from_numpy(m.astype(np.uint8))) for m in maps))
    r = rng.uniform(*protocol.ratio)
    size = rescaled(image.shape[:2], (int(protocol.scale[0] * r), int(protocol.scale[1] * r)))
    sample = [F.resize(x, list(size), antialias=False) for x in sample]  # masks: nearest
    box = crop_box(sample[1].numpy(), protocol.crop, rng, protocol.cat_max_ratio)
    sample = [F.crop(x, *box) for x in sample]
    if rng.random() < protocol.flip:
        sample = [F.horizontal_flip(x) for x in sample]
    sample[0] = tv_tensors.Image(photometric_distortion(sample[0], rng))
    pad = [0, 0, protocol.crop[1] - box[3], protocol.crop[0] - box[2]]  # left, top, right, bottom
    sample = v2.Pad(pad, fill={tv_tensors.Image: MEAN_COLOUR, tv_tensors.Mask: IGNORE_INDEX})(tuple(sample))
    out = [sample[0].permute(1, 2, 0).numpy(), sample[1].numpy()]
    return tuple(out + [x.numpy() > 0 for x in sample[2:]])


def crop_batches(items: Sequence[Item], batch_size: int, protocol: Protocol, seed: int = 0,
                 part: slice = slice(None)) -> Callable[[int], tuple[np.ndarray, ...]]:
    """step -> (images, labels[, reliability]) of ``batches.batch_indices``' items, each a
    ``train_sample`` drawn with a generator seeded by (seed, step, its place in the batch): crops of one
    size from items of any sizes (e.g. a ``seg_data.SegFiles``). ``part``: the places this process
    prepares (data-parallel training; default all)."""
    indices = batch_indices(len(items), batch_size, seed)

    def batch(step: int) -> tuple[np.ndarray, ...]:
        chosen = indices(step)
        samples = [train_sample(items[chosen[k]], protocol, np.random.default_rng([seed, step, k]))
                   for k in range(batch_size)[part]]
        return tuple(np.stack(x) for x in zip(*samples))
    return batch


@torch.no_grad()
def predict(model: torch.nn.Module, images: np.ndarray, protocol: Protocol, batch_size: int = 8) -> np.ndarray:
    """Label maps (N, H, W) uint8 of uint8 images (N, H, W, 3) of one size, as mmsegmentation's whole-image
    inference: each image rescaled to fit the base scale keeping its aspect, padded (``MEAN_COLOUR``) to
    a multiple of ``size_divisor``, its logits cropped back and resized bilinear to the image's size."""
    model.eval()
    device = next(model.parameters()).device
    h, w = images.shape[1:3]
    size = rescaled((h, w), protocol.scale)
    d = protocol.size_divisor
    pad = [0, 0, -size[1] % d, -size[0] % d]
    out = []
    for i in range(0, len(images), batch_size):
        x = torch.tensor(images[i:i + batch_size]).permute(0, 3, 1, 2)
        x = F.pad(F.resize(x, list(size), antialias=False), pad, fill=list(MEAN_COLOUR)).permute(0, 2, 3, 1)
        logits = model(to_tensor(x.numpy()).to(device))[..., :size[0], :size[1]].float()
        out.append(nnF.interpolate(logits, (h, w), mode="bilinear", align_corners=False).argmax(1).cpu())
    return torch.cat(out).byte().numpy()
