"""Segmenters trained, cached, loaded and scored: ``fit`` one, ``fit_all`` several at once in worker
processes, ``score`` one on a validation set. Real datasets are trained and scored by mmsegmentation's
protocol (``a2m_utils.protocol``) when the configuration names one; the toy world keeps its own path.

Worker processes import only this module, torch and segmentation-models-pytorch (no diffusers, no
pipelines): a pool of two starts in about 4 s, against 7.5 when they imported the study
(``benchmarks/pool_start.py``).

``python -m a2m_utils.study.segmenters TRAIN_SET VAL_SET --out scores.json`` trains one segmenter into
the notebooks' cache and scores it; under ``accelerate launch`` it runs data-parallel, one process per
GPU, computing what one process would (a notebook then loads it instead of training it again).
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing as mp
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass, field, replace
from functools import partial
from pathlib import Path

import numpy as np
import segmentation_models_pytorch as smp
import torch

from .. import __version__, beco, checkpoint, phases, protocol, segmentation
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
    gaining long after one network trained on the same labels has stopped (``benchmarks/beco_length.py``), so it
    has its own length, ``beco_steps`` (None: ``steps``). ``protocol`` (``with_protocol``): real data
    trained on mmsegmentation's crops and schedule and scored at each image's own size; None: the images
    as they are (the toy world)."""

    steps: int = 500
    batch_size: int = 32
    lr: float = 3e-3
    optimizer: str = "adam"
    augmentation: bool = False
    arch: tuple = field(default_factory=_toy_arch)
    mixed_precision: bool = True
    beco_steps: int | None = None
    protocol: protocol.Protocol | None = None

    def with_protocol(self, spec: str | Mapping | None) -> SegConfig:
        """This configuration with a protocol (``protocol.protocol``: a name, a mapping of fields, or None)."""
        chosen = protocol.protocol(spec)
        if chosen is not None and self.augmentation:
            raise ValueError("seg_augmentation is the toy world's crop-and-flip, and the protocol brings its own "
                             "augmentation: set seg_augmentation = False")
        return replace(self, protocol=chosen)

    def steps_of(self, method: str) -> int:
        """The training steps of ``method`` ("supervised" or "beco")."""
        return self.beco_steps or self.steps if method == "beco" else self.steps


def training_key(method: str, data: Arrays | SegFiles, num_classes: int, seed: int, config: SegConfig,
                 device: str) -> str:
    """A hash of all a segmenter's training depends on: the data as it sees them (images and labels;
    reliability for BECO), method, classes, seed, configuration, device type, and the kit's, torch's
    and smp's versions (unset settings left out). Reading files on demand, this reads the set once."""
    arch = dict(config.arch)
    if str(arch.get("encoder_weights")).endswith(".safetensors"):  # a local file: its contents, not its path
        arch["encoder_weights"] = file_identity(Path(arch["encoder_weights"]))
    settings = {k: v for k, v in asdict(config).items() if k != "beco_steps" and v is not None} | {
        "steps": config.steps_of(method), "arch": sorted(arch.items())}  # the steps this method trains
    h = hashlib.sha256(json.dumps([method, num_classes, seed, settings,
                                   torch.device(device).type, __version__, torch.__version__,
                                   smp.__version__]).encode())
    items = _items(data)
    for start in range(0, len(items), 256):
        part = list(zip(*(items[i] for i in range(start, min(len(items), start + 256)))))
        for maps in part[:3 if method == "beco" else 2]:  # a run of one size stacked, else one by one
            for x in [np.stack(maps)] if len({m.shape for m in maps}) == 1 else maps:
                h.update(f"{x.shape}{x.dtype}".encode() + np.ascontiguousarray(x).tobytes())
    return h.hexdigest()[:20]


def _items(data: Arrays | SegFiles) -> Sequence[tuple[np.ndarray, ...]]:
    """The (image, label, reliability) items of a set: files read on demand, or views of arrays."""
    return data if isinstance(data, SegFiles) else list(zip(*data))


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
    """``fit`` once its checkpoint path is known; data-parallel under ``accelerate launch``."""
    accelerator = segmentation.data_parallel(device)
    device = accelerator.device if accelerator else device
    arch, steps, p = {**dict(config.arch), "device": device}, config.steps_of(method), config.protocol
    batches = _batches(data, seed, config, segmentation.share(config.batch_size, accelerator)
                       if method == "supervised" else slice(None))  # BECO mixes whole batches, then shares
    common = dict(lr=config.lr, optimizer=config.optimizer, augmentation=config.augmentation, seed=seed, desc=desc,
                  ckpt=ckpt, mixed_precision=config.mixed_precision, accelerator=accelerator,
                  **({} if p is None else {"weight_decay": p.weight_decay, "min_lr": p.min_lr}))
    with threads(1) if torch.device(device).type == "cpu" else nullcontext():
        if method == "supervised":
            model = segmentation.build(num_classes, seed=seed, **arch)
            if p is not None and p.aux_weight:
                model = segmentation.WithAuxHead(model, num_classes, p.aux_weight, p.aux_dropout, seed=seed)
            segmentation.train_supervised(model, batches, steps, **common)
            return partial(_predict, model, p)
        net_a, net_b = beco.build_pair(num_classes, seed=seed, **arch)
        warmup = max(1, len(_items(data)) // config.batch_size)
        beco.train_beco(net_a, net_b, batches, steps, min(warmup, steps // 2), **common)
    return partial(_predict, beco.Ensemble(net_a, net_b), p)


def _batches(data: Arrays | SegFiles, seed: int, config: SegConfig, part: slice) -> segmentation.Batches:
    """The training batches of ``data`` (of each, the ``part`` that this process takes): the protocol's
    crops, or the items as they are."""
    if config.protocol is not None:
        return protocol.crop_batches(_items(data), config.batch_size, config.protocol, seed, part)
    full = data.batches(config.batch_size, seed) if isinstance(data, SegFiles) else \
        array_batches(data, config.batch_size, seed)
    return full if part == slice(None) else partial(_share, full, part)


def _share(batches: segmentation.Batches, part: slice, step: int) -> tuple[np.ndarray, ...]:
    return tuple(x[part] for x in batches(step))


def _predict(model: torch.nn.Module, p: protocol.Protocol | None, images: np.ndarray) -> np.ndarray:
    """Label maps of images of one size: by the protocol, or as they are."""
    return segmentation.predict(model, images) if p is None else protocol.predict(model, images, p)


def score(predict: Predict, data: Arrays | SegFiles, num_classes: int) -> dict:
    """Per-class IoU, mIoU and pixel accuracy of a predictor on a labelled set, each image at its own size
    and one confusion matrix over all (``segmentation.evaluate_set``; data-parallel under ``accelerate
    launch``)."""
    return segmentation.evaluate_set(predict, _items(data), num_classes, segmentation.data_parallel())


def predict_each(predict: Predict, images: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Label maps of images of any sizes, in order; those of one size predicted together."""
    out: list[np.ndarray] = [np.empty(0)] * len(images)
    for shape in dict.fromkeys(x.shape for x in images):
        chosen = [i for i, x in enumerate(images) if x.shape == shape]
        for i, label in zip(chosen, predict(np.stack([images[i] for i in chosen]))):
            out[i] = label
    return out


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
    training runs on one thread anyway, so the results are ``fit``'s); then each loads from the cache.
    Under ``accelerate launch`` they train one after another, each data-parallel."""
    config = config or SegConfig()
    runs = {name: (m, d, num_classes, s, config, name, device, _checkpoint(cache, m, d, num_classes, s, config, device))
            for name, (m, d, s) in jobs.items()}
    if cache is not None and torch.device(device).type == "cpu" and segmentation.data_parallel(device) is None:
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


def main(argv: list[str] | None = None) -> None:
    """Train one segmenter into the notebooks' cache (or load it from there), score it on a validation set,
    and write the scores and the training losses as JSON (see the module's docstring)."""
    import argparse

    from .combination import Study
    from .experiments import seg_config

    p = argparse.ArgumentParser(description="Train a segmenter (data-parallel under accelerate launch) and score it.")
    p.add_argument("train_set", help="the training set: a name the kit knows, or '<kind>:<path>', e.g. voc:PATH")
    p.add_argument("val_set", help="the validation set, as train_set")
    p.add_argument("--out", type=Path, required=True, help="the JSON file to write (it must not exist)")
    p.add_argument("--method", choices=["supervised", "beco"], default="supervised")
    p.add_argument("--n", type=int, help="train on the first N images (default all)")
    p.add_argument("--n-val", type=int, help="score on the first N validation images (default all)")
    p.add_argument("--segmenter", default="paper", help="a registered segmenter, e.g. paper or toy")
    p.add_argument("--protocol", default="voc", help="voc, cityscapes, a JSON object of protocol fields, or none")
    p.add_argument("--steps", type=int, default=20_000)
    p.add_argument("--batch-size", type=int, default=16, help="the whole batch, over all processes")
    p.add_argument("--lr", type=float, default=0.01)
    p.add_argument("--optimizer", choices=["sgd", "adam"], default="sgd")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--mixed-precision", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--device", help="cpu or cuda (default: cuda when there is a GPU)")
    p.add_argument("--cache", type=Path, default=DATA / "segmenters", help="where trainings are kept")
    a = p.parse_args(argv)
    if a.out.exists():
        raise FileExistsError(f"{a.out} exists; remove it or write to another file")
    spec = None if a.protocol == "none" else json.loads(a.protocol) if a.protocol.startswith("{") else a.protocol
    config = replace(seg_config(a.segmenter, a.steps, a.batch_size, a.lr, a.optimizer, False),
                     mixed_precision=a.mixed_precision).with_protocol(spec)
    study = Study(train_set=a.train_set, val_set=a.val_set, device=a.device)
    data = study.real(a.n)
    ckpt = _checkpoint(a.cache, a.method, data, study.num_classes, a.seed, config, study.device)
    predict = _train(a.method, data, study.num_classes, a.seed, config, a.method, study.device, ckpt)
    scores = score(predict, study.val_files(a.n_val), study.num_classes)
    accelerator = segmentation.data_parallel(study.device)
    if accelerator is None or accelerator.is_main_process:
        history = torch.load(ckpt, map_location="cpu", weights_only=False)["history"]
        a.out.write_text(json.dumps({"scores": {**scores, "iou": scores["iou"].tolist()}, "losses": history,
                                     "processes": accelerator.num_processes if accelerator else 1,
                                     "checkpoint": str(ckpt), "settings": asdict(config)}, indent=1))


if __name__ == "__main__":
    main()
