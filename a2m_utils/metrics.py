"""Segmentation metrics with the PASCAL VOC convention (label 255 is ignored)."""

from __future__ import annotations

import numpy as np

from .classes import IGNORE_INDEX


def confusion_matrix(pred: np.ndarray, target: np.ndarray, num_classes: int) -> np.ndarray:
    """(num_classes, num_classes) counts, rows = ground truth, columns = prediction."""
    pred, target = np.asarray(pred).ravel(), np.asarray(target).ravel()
    if pred.shape != target.shape:
        raise ValueError(f"prediction has {pred.size} pixels, target {target.size}")
    keep = target != IGNORE_INDEX
    pred, target = pred[keep].astype(np.int64), target[keep].astype(np.int64)
    if target.size and (target.max() >= num_classes or pred.max() >= num_classes):
        raise ValueError(f"labels must lie in [0, {num_classes}) or be {IGNORE_INDEX}")
    return np.bincount(target * num_classes + pred, minlength=num_classes**2).reshape(num_classes, num_classes)


def scores(conf: np.ndarray) -> dict:
    """Per-class IoU (NaN for classes absent from both), mIoU over present classes, pixel accuracy."""
    tp = np.diag(conf).astype(np.float64)
    union = conf.sum(0) + conf.sum(1) - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(union > 0, tp / union, np.nan)
    return {
        "iou": iou,
        "miou": float(np.nanmean(iou)) if np.isfinite(iou).any() else float("nan"),
        "pixel_acc": float(tp.sum() / max(conf.sum(), 1)),
    }
