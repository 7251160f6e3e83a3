"""The study's shared steps (notebooks 03-06): cached datasets, segmenters scored (trained by ``segmenters``), tables.
The datasets come from a combination (``combination.Study``); nothing here knows the toy world."""

from __future__ import annotations

import csv
import hashlib
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from .. import registry, segmentation
from ..classes import IGNORE_INDEX, ClassVocab
from ..dataset import DatasetWriter, Settings, load_sample, merge
from ..identity import model_identity, scheduler_identity
from ..lora import add_lora, save_lora, train_lora
from ..masks import PseudoMask, class_maps, pseudo_mask
from ..metrics import confusion_matrix, scores
from ..nti import Inversion, invert
from ..prompts import Prompt
from ..refine import label_refined
from ..registry import VOCABS
from ..seg_data import SegFiles, VOCLayout, fg_bg
from ..tokens import class_positions
from . import paper
from .report import DATA, md_table, plain
from .segmenters import Arrays, Predict, SegConfig


def seg_config(segmenter: str, steps: int, batch_size: int, lr: float, optimizer: str,
               augmentation: bool, beco_steps: int | None = None) -> SegConfig:
    """The notebooks' segmenter parameters as a ``SegConfig``; ``segmenter`` names the network
    (``registry.SEGMENTERS``: "paper", and the toy world's "toy")."""
    return SegConfig(steps, batch_size, lr, optimizer, augmentation, tuple(registry.segmenter(segmenter).items()),
                     beco_steps=beco_steps)


def cached_dataset(pipe, prompts: Sequence[Prompt], settings: Settings, name: str, root: Path = DATA,
                   progress: bool = True) -> Path:
    """Generate (or resume, or reuse) a dataset in ``root/<name>-<hash of settings, model and prompts>``."""
    key = json.dumps([settings.to_json(), model_identity(pipe), scheduler_identity(pipe.scheduler),
                      [p.__dict__ for p in prompts]], sort_keys=True)
    folder = root / f"{name}-{hashlib.sha256(key.encode()).hexdigest()[:10]}"
    DatasetWriter(folder, pipe, VOCABS[settings.vocab], prompts, settings).run(progress=progress)
    merge(folder)
    return folder


def arrays(folder: Path) -> Arrays:
    """Images, pseudo-masks and reliability maps of a generated dataset."""
    return VOCLayout(folder).arrays()


# Table 5's post-processings, and the self-attention refinement beyond the paper.
VARIANTS = {
    "threshold 64": {"method": "threshold", "theta": 64},
    "threshold 128": {"method": "threshold", "theta": 128},
    "otsu": {"method": "otsu"},
    "dcrf beta 0": {"method": "dcrf", "beta": 0.0},
    "dcrf beta 0.2": {"method": "dcrf", "beta": 0.2},
    "self-attention refinement": {"method": "refine"},
}


def relabel(folder: Path, method: str, beta: float = 0.2, theta: float = 128) -> np.ndarray:
    """Pseudo-masks of a stored dataset redone from its raw class maps with another post-processing
    (``"refine"``: the stored self-attention-refined maps), without regenerating."""
    labels = []
    for sid in (folder / "ImageSets" / "Segmentation" / "train.txt").read_text().split():
        s = load_sample(folder, sid)
        size = s["image"].shape[:2]
        if method == "refine":
            if s["refined"] is None:
                raise ValueError(f"{folder} was generated without self-attention (Settings.self_attention_res)")
            labels.append(label_refined(s["refined"], s["class_ids"], size))
        else:
            labels.append(pseudo_mask(s["maps"], s["class_ids"], s["image"], method, beta, theta=theta).label)
    return np.stack(labels)



def size_arms(sizes: Sequence[int], beco_sizes: Sequence[int]) -> list[tuple[str, str, int]]:
    """Table 2's rows as (name, method, images): attn2mask at every size in ``sizes``, attn2mask+BECO at
    ``beco_sizes``, which must be among them (the paper trains BECO at two of its four sizes)."""
    if missing := sorted(set(beco_sizes) - set(sizes)):
        raise ValueError(f"beco_sizes {missing} are not in sizes {sorted(sizes)}: Table 2 places each BECO row "
                         "beside plain training at the same size")
    return [("attn2mask", "supervised", n) for n in sizes] + [("attn2mask+BECO", "beco", n) for n in beco_sizes]


def score(predict: Predict, images: np.ndarray, labels: np.ndarray, num_classes: int) -> dict:
    """Per-class IoU, mIoU and pixel accuracy of a predictor on a labelled set (``segmentation.evaluate``)."""
    return segmentation.evaluate(predict, images, labels, num_classes)


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for one value)."""
    v = np.asarray(values, dtype=np.float64)
    return float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else 0.0


def write_table(path: str | Path, rows: Sequence[dict]) -> Path:
    """Rows of equal keys as CSV (floats to 4 places, NaN empty) and, beside it, Markdown."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = [plain(r) for r in rows]
    columns = list(rows[0])
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, columns)
        writer.writeheader()
        writer.writerows(rows)
    path.with_suffix(".md").write_text(md_table(columns, [[r[c] for c in columns] for r in rows]) + "\n")
    return path


def foreground(data: Arrays | SegFiles) -> Arrays | SegFiles:
    """The same images with foreground/background labels (ImageNet-S FG/BG, Table 3)."""
    return data.relabelled(fg_bg) if isinstance(data, SegFiles) else (data[0], fg_bg(data[1]), data[2])


def pseudo_mask_scores(labels: np.ndarray, truth: np.ndarray, num_classes: int) -> dict:
    """Scores of pseudo-masks against reference masks over their labelled pixels (255 = ignored),
    with the share of pixels labelled."""
    kept = labels != IGNORE_INDEX
    conf = confusion_matrix(np.where(kept, labels, 0), np.where(kept, truth, IGNORE_INDEX), num_classes)
    return scores(conf) | {"labelled": float(kept.mean())}


def table5_conclusions(rows: Sequence[dict], preset_beta: float) -> list[str]:
    """The paper's Table 5 claims checked against measured rows (``segmenter_mIoU`` per variant);
    ``preset_beta``: the study preset's beta, the baseline of the refinement."""
    got = {r["post_processing"]: r["segmenter_mIoU"] for r in rows}
    paper_order = sorted((k for k in got if k in paper.TABLE5), key=paper.TABLE5.get, reverse=True)
    ours = sorted(paper_order, key=got.get, reverse=True)
    best, preset = ours[0], f"dcrf beta {preset_beta:g}"
    return [
        (f"Paper: dCRF beta = 0.2 is best ({paper.TABLE5['dcrf beta 0.2']}). Here the best of the paper's variants "
         f"is {best} ({got[best]:.3f}): {'reproduced' if best == 'dcrf beta 0.2' else 'not reproduced'}."),
        (f"Paper: beta = 0.2 beats beta = 0 by {paper.TABLE5['dcrf beta 0.2'] - paper.TABLE5['dcrf beta 0']:.1f} "
         f"points. Here: {100 * (got['dcrf beta 0.2'] - got['dcrf beta 0']):+.1f} points."),
        (f"Paper: dCRF beats thresholds and Otsu. Here the best dCRF is "
         f"{max(got['dcrf beta 0'], got['dcrf beta 0.2']):.3f}, the best threshold/Otsu "
         f"{max(got['threshold 64'], got['threshold 128'], got['otsu']):.3f}."),
        f"Ranking here: {' > '.join(ours)}; in the paper: {' > '.join(paper_order)}.",
        *([(f"Self-attention refinement: {refined:.3f} vs {preset} (the preset's) {got[preset]:.3f}: it "
            f"{'beats' if refined > got[preset] else 'does not beat'} it.")]
          if (refined := got.get("self-attention refinement")) is not None else []),
    ]


def inverted_masks(pipe, images: np.ndarray, captions: Sequence[str], vocab: ClassVocab, num_steps: int,
                   guidance_scale: float, inner_steps: int = 10, beta: float = 0.2, r: float = 0.5,
                   batch_size: int = 20, precision: str = "fp32") -> tuple[list[Inversion], list[PseudoMask]]:
    """Null-text inversion of real images with their captions, ``batch_size`` at a time in ``precision``
    (``nti.invert``), and the pseudo-masks (Eqs. 4-6, dCRF) of the attention captured while
    regenerating them (Table 6)."""
    inversions: list[Inversion] = []
    for i in tqdm(range(0, len(images), batch_size), desc="null-text inversion", unit="batch"):
        inversions += invert(pipe, images[i:i + batch_size], list(captions[i:i + batch_size]), num_steps,
                             guidance_scale, inner_steps=inner_steps, precision=precision)
    masks = []
    for inv, caption, image in zip(inversions, captions, images):
        positions = class_positions(caption, pipe.tokenizer, vocab)
        masks.append(pseudo_mask(class_maps(inv.attention, positions), [vocab.index(c) for c in positions], image,
                                 "dcrf", beta, r))
    return inversions, masks


def table6_conclusions(rows: Sequence[dict]) -> list[str]:
    """The paper's Table 6 claim (NTI does not beat attn2mask) checked against measured rows."""
    got = {r["method"]: r["mIoU"] for r in rows}
    a2m, train, val = got["attn2mask"], got["NTI on the train set and retraining"], got["NTI on the val set"]
    verdict = "reproduced" if max(train, val) <= a2m else "not reproduced"
    return [(f"Paper: neither NTI variant beats attn2mask (51.1 vs 50.6 and 47.3). Here: attn2mask {a2m:.3f}, "
             f"NTI train {train:.3f}, NTI val {val:.3f}: {verdict}.")]


def adapted_pipeline(study, images: np.ndarray, instance_prompt: str, steps: int, lr: float, batch_size: int,
                     rank: int = 4, seed: int = 0, root: Path = DATA):
    """The study's pipeline with a DreamBooth-LoRA trained on unlabeled ``images`` (Table 4), cached
    (and resumed) in ``root/lora-<hash>`` (of the base model's identity, the images and the settings).
    Its identity covers the adapter, so its datasets are cached apart from the base's."""
    pipe = study.pipeline()
    key = json.dumps([model_identity(pipe), instance_prompt, steps, lr, batch_size, rank, seed,
                      hashlib.sha256(np.ascontiguousarray(images).tobytes()).hexdigest()])
    run_dir = root / f"lora-{hashlib.sha256(key.encode()).hexdigest()[:10]}"
    add_lora(pipe, rank=rank, alpha=rank, seed=seed)
    train_lora(pipe, images, instance_prompt, run_dir, steps=steps, lr=lr, batch_size=batch_size, seed=seed)
    save_lora(pipe, run_dir / "lora")
    return pipe


def table4_conclusions(rows: Sequence[dict], n_seeds: int, floors: Sequence[dict]) -> list[str]:
    """The adaptation gain against the trivial ``floors`` and the spread over ``n_seeds`` seeds (Table 4,
    ``paper.table4_verdict``)."""
    base, lora = rows[0], rows[1]
    return [(f"Paper: LoRA adaptation raises Cityscapes mIoU 13.2 -> 17.1 and accuracy 63.7 -> 69.7. Here mIoU "
             f"{base['mIoU']:.3f} -> {lora['mIoU']:.3f}, accuracy {base['pixel_acc']:.3f} -> "
             f"{lora['pixel_acc']:.3f} ({n_seeds} seeds): {paper.table4_verdict(rows, floors)}.")]


def table1_conclusions(rows: Sequence[dict], n_seeds: int) -> list[str]:
    """The paper's Table 1 ordering and ratios, and whether the BECO gain exceeds the seed spread."""
    r = {row["method"]: row for row in rows}
    supervised, cotrained = r["attn2mask"], r["attn2mask+BECO"]
    gain, noise = cotrained["mIoU"] - supervised["mIoU"], max(supervised["mIoU_std"], cotrained["mIoU_std"])
    order = " > ".join(sorted(r, key=lambda k: r[k]["mIoU"], reverse=True))
    return [
        (f"Paper order real > BECO > plain, plain/real = 0.72, BECO/real = 0.82 (goal here: BECO/real >= 0.90). "
         f"Here: {order}, plain/real = {supervised['to_real']:.2f}, BECO/real = {cotrained['to_real']:.2f}."),
        (f"BECO - plain = {gain:+.3f} mIoU against a seed spread of {noise:.3f} ({n_seeds} seeds): the gain "
         f"{'exceeds' if abs(gain) > 2 * noise else 'does not exceed'} twice the spread."),
    ]
