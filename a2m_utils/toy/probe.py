"""Attention quality on rendered toy images with exact ground truth.

Noise each image to the given timesteps, run one U-Net forward per timestep with the
true caption, average the captured cross-attention, and turn it into a label map with
Eqs. 4-6 and the chosen post-processing: the mIoU against the rendered label map
measures how well the model's attention localizes, independently of its generation.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from ..capture import capture_attention
from ..images import to_tensor
from ..latents import embed
from ..masks import PseudoMask, class_maps, pseudo_mask
from ..metrics import confusion_matrix, scores
from ..phases import phase
from ..tokens import class_positions
from . import world as toyworld
from .world import TOY


def sample_mask(attn: np.ndarray, sample: toyworld.ToySample, tokenizer, method: str = "dcrf", beta: float = 0.0,
                attributes: Sequence[str] = ()) -> PseudoMask:
    """The pseudo-mask (Eqs. 4-6) of a rendered sample from its token attention and its caption."""
    positions = class_positions(sample.caption, tokenizer, TOY, expected=sample.scene.classes, attributes=attributes)
    ids = [TOY.index(n) for n in positions]
    return pseudo_mask(class_maps(attn, positions), ids, sample.image, method, beta)


@phase("attention probe")
def attention_labels(model, samples: Sequence[toyworld.ToySample], timesteps: Sequence[int], seed: int,
                     betas: Sequence[float], method: str, variants: Sequence[bool] = (False,),
                     resolution: tuple[int, int] | None = None) -> dict[tuple[float, bool], list[np.ndarray]]:
    """Pseudo-masks of rendered samples from one forward pass per timestep, for each background
    prior beta (Eq. 5) and variant (False: class tokens only; True: with the colour tokens bound
    to each class word), keyed by (beta, variant)."""
    x0 = to_tensor(np.stack([s.image for s in samples]))
    captions = [s.caption for s in samples]
    gen = torch.Generator().manual_seed(seed)
    noise = torch.randn(x0.shape, generator=gen).to(model.unet.device)
    x0 = x0.to(model.unet.device)
    with torch.no_grad(), capture_attention(model.unet, guidance=False) as store:
        context = embed(model, captions)
        for t in timesteps:
            tt = torch.full((len(samples),), int(t), dtype=torch.long, device=model.unet.device)
            model.unet(model.scheduler.add_noise(x0, noise, tt), tt, context)
    attn = store.cross_attention(resolution).cpu().numpy()
    return {
        (b, v): [sample_mask(a, s, model.tokenizer, method, b, toyworld.COLOURS if v else ()).label for s, a in zip(samples, attn)]
        for b in betas for v in variants
    }


def rendered_attention_by_beta(model, seeds: Sequence[int], timesteps: Sequence[int] = (500,),
                               betas: Sequence[float] = (0.2,), method: str = "dcrf",
                               variants: Sequence[bool] = (False, True), batch_size: int = 32,
                               domain: str = "source",
                               resolution: tuple[int, int] | None = None) -> dict[float, dict[bool, dict]]:
    """Per-class IoU, mIoU and pixel accuracy of attention pseudo-masks on rendered images, per
    beta and variant (see ``attention_labels``), all from the same forward passes; maps of all
    layers, or of the layers at one ``resolution``."""
    keys = [(b, v) for b in betas for v in variants]
    conf = {k: np.zeros((TOY.num_classes, TOY.num_classes), dtype=np.int64) for k in keys}
    for i in range(0, len(seeds), batch_size):
        samples = [toyworld.make_sample(s, domain=domain) for s in seeds[i:i + batch_size]]
        labels = attention_labels(model, samples, timesteps, seeds[i], betas, method, variants, resolution)
        for k in keys:
            for sample, label in zip(samples, labels[k]):
                conf[k] += confusion_matrix(label, sample.label, TOY.num_classes)
    return {b: {v: scores(conf[b, v]) for v in variants} for b in betas}


def rendered_attention_variants(model, seeds: Sequence[int], timesteps: Sequence[int] = (500,),
                                beta: float = 0.2, **kwargs) -> dict[bool, dict]:
    """``rendered_attention_by_beta`` at one beta."""
    return rendered_attention_by_beta(model, seeds, timesteps, (beta,), **kwargs)[beta]


def rendered_attention_scores(model, seeds: Sequence[int], timesteps: Sequence[int] = (500,),
                              attributes: bool = False, **kwargs) -> dict:
    """``rendered_attention_variants`` for one variant."""
    return rendered_attention_variants(model, seeds, timesteps, variants=(attributes,), **kwargs)[attributes]


def rendered_attention_by_method(model, seeds: Sequence[int], timesteps: Sequence[int] = (500,), beta: float = 0.2,
                                 methods: Sequence[str] = ("argmax", "threshold", "otsu", "dcrf"),
                                 **kwargs) -> dict[str, dict]:
    """``rendered_attention_by_beta`` at one beta, class tokens only, for each post-processing of
    ``methods`` (``masks.METHODS``): what attention alone labels (argmax, threshold, Otsu) beside
    the dense CRF, which on flat-coloured images does much of the work."""
    return {m: rendered_attention_by_beta(model, seeds, timesteps, (beta,), m, (False,), **kwargs)[beta][False]
            for m in methods}
