"""Segmenters trained, cached and loaded: ``fit`` one, ``fit_all`` several at once in worker processes.

Worker processes import only this module, torch and segmentation-models-pytorch (no diffusers, no
pipelines): a pool of two starts in about 4 s, against 7.5 when they imported the study
(``runs/speed/pool_start.txt``)."""

from __future__ import annotations

import hashlib
import json
import multiprocessing as mp
import os
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import segmentation_models_pytorch as smp
import torch

from .. import __version__, beco, checkpoint, phases, segmentation
from ..batches import array_batches
from ..identity import file_identity
from ..phases import phase
from ..seg_data import SegFiles
from .report import DATA

Arrays = tuple[np.ndarray, np.ndarray, np.ndarray]  # images, labels, reliability
Predict = Callable[[np.ndarray], np.ndarray]


def _toy_arch() -> tuple:
    """The toy world's segmenter (registered by its plugin); imported here, not above, so that
    workers never load the registry and its pipelines."""
    from .. import registry
    return tuple(registry.segmenter("toy").items())


@dataclass(frozen=True)
class SegConfig:
    """Segmenter training in the toy world: a small smp U-Net (ResNet-18, 3 stages) whose encoder the
    toy world pretrained (its ImageNet: ``a2m_utils.toy.encoder``), the paper's poly schedule and weight
    decay, but Adam (lr 3e-3) rather than SGD (0.01): with no pretrained encoder, SGD reached 0.20
    mIoU on rendered images in the same steps, Adam 0.89 (measured here, 1000 images, 400 steps).
    Crop-and-flip augmentation is off by default: it lowered that figure (0.39 -> 0.33 with a
    MobileNet-v2 encoder). BECO warms up for one epoch. Mixed precision (bf16 on CPU) halves the time
    per step and trains as far. The pretrained encoder makes 500 steps of 32 images converged
    (real-supervised within 0.02 of 2000 steps: ``benchmarks/segmenter_convergence.py``). BECO keeps
    gaining long after one network trained on the same labels has stopped (``runs/encoder``), so it
    has its own length, ``beco_steps`` (None: ``steps``)."""

    steps: int = 500
    batch_size: int = 32
    lr: float = 3e-3
    optimizer: str = "adam"
    augmentation: bool = False
    arch: tuple = field(default_factory=_toy_arch)
    mixed_precision: bool = True
    beco_steps: int | None = None

    def steps_of(self, method: str) -> int:
        """The training steps of ``method`` ("supervised" or "beco")."""
        return self.beco_steps or self.steps if method == "beco" else self.steps


def training_key(method: str, data: Arrays | SegFiles, num_classes: int, seed: int, config: SegConfig,
                 device: str) -> str:
    """A hash of all a segmenter's training depends on: the data as it sees them (images and labels;
    reliability for BECO), method, classes, seed, configuration, device type, and the kit's, torch's
    and smp's versions. Reading files on demand, this reads the set once."""
    arch = dict(config.arch)
    if str(arch.get("encoder_weights")).endswith(".safetensors"):  # a local file: its contents, not its path
        arch["encoder_weights"] = file_identity(Path(arch["encoder_weights"]))
    settings = {k: v for k, v in asdict(config).items() if k != "beco_steps"} | {
        "steps": config.steps_of(method), "arch": sorted(arch.items())}  # the steps this method trains
    h = hashlib.sha256(json.dumps([method, num_classes, seed, settings,
                                   torch.device(device).type, __version__, torch.__version__,
                                   smp.__version__]).encode())
    n = len(data) if isinstance(data, SegFiles) else len(data[0])
    for start in range(0, n, 256):
        part = data.arrays(range(start, min(n, start + 256))) if isinstance(data, SegFiles) else \
            [x[start:start + 256] for x in data]
        for x in part[:3 if method == "beco" else 2]:
            h.update(f"{x.shape}{x.dtype}".encode() + np.ascontiguousarray(x).tobytes())
    return h.hexdigest()[:20]


def fit(method: str, data: Arrays | SegFiles, num_classes: int, seed: int = 0, config: SegConfig | None = None,
        desc: str | None = None, device: str = "cpu", cache: Path | None = DATA / "segmenters") -> Predict:
    """Train a segmenter on ``device`` on ``data`` (arrays, or files read on demand): ``"supervised"``
    (cross-entropy on every labelled pixel) or ``"beco"`` (two networks co-trained on the reliability
    maps); returns its predictor. On CPU it trains on one thread, so its result does not depend on the
    machine's core count (``fit_all`` trains several at once). With ``cache``, the training checkpoints
    to ``cache/<training_key>.pt``: an interrupted one resumes, and a finished one (the same data,
    method, seed and settings, in any notebook) loads instead of training again. Delete the folder
    after changing training code."""
    config = config or SegConfig()
    return _train(method, data, num_classes, seed, config, desc or method, device,
                  _checkpoint(cache, method, data, num_classes, seed, config, device))


def _checkpoint(cache: Path | None, method: str, data: Arrays | SegFiles, num_classes: int, seed: int,
                config: SegConfig, device: str) -> Path | None:
    """Where a training checkpoints in ``cache`` (None: nowhere); an unknown method is named first."""
    if method not in ("supervised", "beco"):
        raise ValueError(f"unknown training method {method!r}; expected 'supervised' or 'beco'")
    if cache is None:
        return None
    return Path(cache) / f"{training_key(method, data, num_classes, seed, config, device)}.pt"


def _train(method: str, data: Arrays | SegFiles, num_classes: int, seed: int, config: SegConfig, desc: str,
           device: str, ckpt: Path | None) -> Predict:
    """``fit`` once its checkpoint path is known."""
    n = len(data) if isinstance(data, SegFiles) else len(data[0])
    batches = data.batches(config.batch_size, seed) if isinstance(data, SegFiles) else \
        array_batches(data, config.batch_size, seed)
    arch, steps = {**dict(config.arch), "device": device}, config.steps_of(method)
    with threads(1) if torch.device(device).type == "cpu" else nullcontext():
        if method == "supervised":
            model = segmentation.build(num_classes, seed=seed, **arch)
            segmentation.train_supervised(model, batches, steps, lr=config.lr, optimizer=config.optimizer,
                                          augmentation=config.augmentation, seed=seed, desc=desc, ckpt=ckpt,
                                          mixed_precision=config.mixed_precision)
            return lambda images: segmentation.predict(model, images)
        net_a, net_b = beco.build_pair(num_classes, seed=seed, **arch)
        warmup = max(1, n // config.batch_size)
        beco.train_beco(net_a, net_b, batches, steps, min(warmup, steps // 2), lr=config.lr,
                        augmentation=config.augmentation, seed=seed, desc=desc, optimizer=config.optimizer,
                        ckpt=ckpt, mixed_precision=config.mixed_precision)
    return lambda images: beco.predict_ensemble(net_a, net_b, images)


@contextmanager
def threads(n: int) -> Iterator[None]:
    """Run with ``n`` torch threads, then restore the count."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


Job = tuple[str, Arrays | SegFiles, int]  # method, data, seed


def fit_all(jobs: Mapping[str, Job], num_classes: int, config: SegConfig | None = None, device: str = "cpu",
            cache: Path | None = DATA / "segmenters", workers: int | None = None) -> dict[str, Predict]:
    """``fit`` for named jobs (method, data, seed) sharing classes and settings. On CPU with a cache,
    those not yet trained train first in ``workers`` processes at once (default: one per core; each
    training runs on one thread anyway, so the results are ``fit``'s); then each loads from the cache."""
    config = config or SegConfig()
    runs = {name: (m, d, num_classes, s, config, name, device, _checkpoint(cache, m, d, num_classes, s, config, device))
            for name, (m, d, s) in jobs.items()}
    if cache is not None and torch.device(device).type == "cpu":
        todo = list({run[-1]: run for run in runs.values()
                     if checkpoint.step_of(run[-1]) < config.steps_of(run[0])}.values())
        todo.sort(key=lambda run: run[0] != "beco")  # the longest first: fewer idle workers at the end
        workers = min(workers or os.cpu_count() or 1, len(todo))
        if workers > 1:
            with phase("segmenter training"), ProcessPoolExecutor(
                    workers, mp_context=mp.get_context("spawn"), initializer=_quiet_phases) as pool:
                list(pool.map(_train_job, todo))
    return {name: _train(*run) for name, run in runs.items()}


def _quiet_phases() -> None:
    """A ``fit_all`` worker's time is the parent's "segmenter training": it writes no phase totals."""
    os.environ.pop(phases.ENV, None)


def _train_job(run: tuple) -> None:
    """A ``fit_all`` worker: train one segmenter into its checkpoint."""
    _train(*run)
