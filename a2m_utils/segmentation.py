"""Segmentation models from segmentation-models-pytorch: build, augment, train (supervised) with
checkpoints, predict, evaluate.

Training is reproducible step by step: every random draw of step ``s`` comes from generators
seeded with (seed, s), so a run resumed from its checkpoint ends exactly as an uninterrupted one.
Started by ``accelerate launch`` (or torchrun), training and evaluation run data-parallel (DDP, one
process per GPU): each process takes its share of every batch, batch norm and the loss see the whole
batch, so the run computes what one process would, up to float rounding (dropout masks are drawn per
process)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import nullcontext
from itertools import groupby
from pathlib import Path

import numpy as np
import segmentation_models_pytorch as smp
import torch
import torch.nn.functional as F
from accelerate import Accelerator
from accelerate.utils import get_int_from_env
from PIL import Image
from safetensors.torch import load_file
from tqdm.auto import tqdm

from . import checkpoint
from .classes import IGNORE_INDEX
from .images import to_tensor
from .metrics import confusion_matrix, scores
from .phases import phase

# The paper's segmenter (DeepLabv3+ ResNet-50, ImageNet-pretrained encoder), and a small U-Net for 32x32 toy images
# on CPU (the toy world pretrains its encoder: a2m_utils.toy.encoder).
PAPER = {"arch": "DeepLabV3Plus", "encoder_name": "resnet50", "encoder_weights": "imagenet"}
TOY = {"arch": "Unet", "encoder_name": "resnet18", "encoder_depth": 3, "decoder_channels": (64, 32, 16)}
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)  # of RGB in [0, 1]


def build(num_classes: int, arch: str = "DeepLabV3Plus", encoder_name: str = "resnet50",
          encoder_weights: str | None = None, seed: int = 0, device: str | torch.device = "cpu",
          **kwargs) -> torch.nn.Module:
    """An smp model on ``device``, its new layers drawn from ``seed`` (the global random state is
    kept). ``encoder_weights``: None (from scratch), a ``.safetensors`` file of the encoder's state
    dict, or a name smp knows ("imagenet": downloaded from the Hugging Face hub once,
    smp-hub/<encoder>.imagenet, or a message says what to place where), whose encoder then sees its
    input normalised with ImageNet's mean and standard deviation (``imagenet_input``)."""
    local = encoder_weights is not None and str(encoder_weights).endswith(".safetensors")
    if local and not Path(encoder_weights).is_file():
        raise FileNotFoundError(f"encoder weights {encoder_weights} not found")
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = smp.create_model(arch, encoder_name=encoder_name, classes=num_classes,
                                     encoder_weights=None if local else encoder_weights, **kwargs)
    except (OSError, ConnectionError) as err:  # huggingface_hub's offline and HTTP errors are OSErrors
        raise RuntimeError(
            f"the {encoder_weights} weights of the {encoder_name} encoder could not be loaded ({type(err).__name__}). "
            f"On a machine with internet run `huggingface-cli download smp-hub/{encoder_name}.{encoder_weights}` "
            "once (it fills the Hugging Face cache, which an offline machine can copy), or train from scratch "
            "with encoder_weights=None") from err
    drop_unused_stages(model.encoder)
    if local:
        model.encoder.load_state_dict(load_file(encoder_weights))
    elif encoder_weights is not None:
        model.encoder.register_forward_pre_hook(imagenet_input)
    return model.to(device, memory_format=torch.channels_last)  # NHWC: faster convolutions on CPU and GPU


def imagenet_input(encoder: torch.nn.Module, args: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
    """An encoder's input, the kit's images in [-1, 1] (``images.to_tensor``), normalised with ImageNet's
    mean and standard deviation, as its pretrained weights expect (a forward pre-hook)."""
    x = args[0]
    mean, std = (x.new_tensor(v).view(1, 3, 1, 1) for v in (IMAGENET_MEAN, IMAGENET_STD))
    return ((x + 1) / 2 - mean) / std, *args[1:]


class WithAuxHead(torch.nn.Module):
    """An smp model with mmsegmentation's auxiliary FCN head on the encoder's stage before the last
    (ResNet's stage 3): 3x3 convolution to ``channels``, batch norm, ReLU, dropout, 1x1 classifier. In
    training it returns (main logits, auxiliary logits at the input size), whose cross-entropies
    ``train_supervised`` adds with ``weight``; in eval mode, the main logits only."""

    def __init__(self, net: torch.nn.Module, num_classes: int, weight: float = 0.4, dropout: float = 0.1,
                 seed: int = 0, channels: int = 256) -> None:
        super().__init__()
        self.net, self.weight = net, weight
        with torch.random.fork_rng(devices=[]):  # its layers drawn from ``seed``, the global state kept
            torch.manual_seed(seed)
            self.aux = torch.nn.Sequential(
                torch.nn.Conv2d(net.encoder.out_channels[-2], channels, 3, padding=1, bias=False),
                torch.nn.BatchNorm2d(channels), torch.nn.ReLU(inplace=True), torch.nn.Dropout2d(dropout),
                torch.nn.Conv2d(channels, num_classes, 1))
        self.aux.to(device_of(net), memory_format=torch.channels_last)

    def forward(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        if not self.training:
            return self.net(x)
        self.net.check_input_shape(x)
        features = self.net.encoder(x)
        main = self.net.segmentation_head(self.net.decoder(features))
        aux = F.interpolate(self.aux(features[-2]), x.shape[-2:], mode="bilinear", align_corners=False)
        return main, aux


def drop_unused_stages(encoder: torch.nn.Module) -> None:
    """Replace the encoder stages deeper than its depth, which never run, by identities: smp keeps
    them (a 3-stage ResNet-18 keeps 94% of its weights unused), and they would fill every saved file."""
    deepest = 2 ** (len(encoder.out_channels) - 1)  # the output stride of the last stage in use
    unused = [m for stride, ms in getattr(encoder, "get_stages", dict)().items() if stride > deepest for m in ms]
    for name, child in list(encoder.named_children()):
        if any(child is m for m in unused):
            setattr(encoder, name, torch.nn.Identity())


class Precision:
    """Mixed precision (``mixed``): fp16 autocast with gradient scaling on CUDA, bf16 autocast on CPU
    (about half the time per step of the toy segmenter on a CPU with AVX512-BF16); else fp32. The
    weights and the optimiser stay fp32 either way."""

    def __init__(self, device: torch.device, mixed: bool = True) -> None:
        self.type = torch.device(device).type
        self.mixed = mixed
        self.scaler = torch.amp.GradScaler("cuda", enabled=mixed and self.type == "cuda")

    def autocast(self):
        if not self.mixed:
            return nullcontext()
        return torch.autocast(self.type, dtype=torch.float16 if self.type == "cuda" else torch.bfloat16)

    def step(self, loss: torch.Tensor, opt: torch.optim.Optimizer) -> None:
        """Backward and optimiser step (gradients scaled on CUDA only)."""
        opt.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(opt)
        self.scaler.update()

    def parts(self) -> dict:
        """The scaler's state, to checkpoint (none off CUDA)."""
        return {"scaler": self.scaler} if self.scaler.is_enabled() else {}


# step -> (images uint8 NHWC, labels NHW uint8[, reliability NHW bool]); extra items are ignored here.
Batches = Callable[[int], tuple[np.ndarray, ...]]


def step_rng(seed: int, step: int) -> np.random.Generator:
    """The generator of one training step's augmentation and mixing."""
    return np.random.default_rng([seed, step])


def _crop(x: np.ndarray, box: tuple[int, int, int, int], resample: Image.Resampling) -> np.ndarray:
    return np.asarray(Image.fromarray(x).resize(x.shape[1::-1], resample, box=box))


def augment(images: np.ndarray, labels: np.ndarray, rng: np.random.Generator, extra: np.ndarray | None = None,
            scale: tuple[float, float] = (0.25, 1.0), ratio: tuple[float, float] = (3 / 4, 4 / 3),
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Random resized crop (area fraction in ``scale``, aspect in ``ratio``, back to the input size)
    and horizontal flip with probability 0.5, per image; images bilinear, ``labels`` and ``extra``
    maps (N, H, W), e.g. reliability, nearest, all with the same crop and flip."""
    out_i, out_l, out_e = [], [], []
    h, w = labels.shape[1:]
    for k in range(len(images)):
        area = h * w * rng.uniform(*scale)
        aspect = np.exp(rng.uniform(*np.log(ratio)))
        ch, cw = min(h, round(np.sqrt(area / aspect))), min(w, round(np.sqrt(area * aspect)))
        top, left = rng.integers(h - ch + 1), rng.integers(w - cw + 1)
        box, flip = (left, top, left + cw, top + ch), rng.random() < 0.5
        maps = [(out_i, images[k], Image.Resampling.BILINEAR), (out_l, labels[k], Image.Resampling.NEAREST)]
        if extra is not None:
            maps.append((out_e, extra[k], Image.Resampling.NEAREST))
        for out, x, resample in maps:
            y = _crop(x, box, resample)
            out.append(y[:, ::-1] if flip else y)
    return np.stack(out_i), np.stack(out_l), (np.stack(out_e) if extra is not None else None)


def device_of(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


def data_parallel(device: str | torch.device | None = None) -> Accelerator | None:
    """This process's ``Accelerator`` when a launcher started several processes (``accelerate launch
    --multi_gpu``, torchrun, or MPI); None when it runs alone. A ``device`` of type "cpu" makes them CPU
    processes (gloo); the first call in a process settles it."""
    if get_int_from_env(["WORLD_SIZE", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE"], 1) < 2:
        return None
    return Accelerator(cpu=device is not None and torch.device(device).type == "cpu")


def share(batch_size: int, accelerator: Accelerator | None) -> slice:
    """The places in a batch that this process trains on: batch / processes of them, in rank order."""
    if accelerator is None:
        return slice(None)
    n, rank = accelerator.num_processes, accelerator.process_index
    if batch_size % n:
        raise ValueError(f"a batch of {batch_size} does not split over {n} processes; choose a batch size "
                         f"divisible by {n}")
    return slice(rank * batch_size // n, (rank + 1) * batch_size // n)


class CpuSyncBatchNorm(torch.nn.BatchNorm2d):
    """Batch norm over the whole batch of all data-parallel CPU processes (gloo), where torch's
    SyncBatchNorm does not run: the per-channel sums all-reduced (the reduction differentiable) and
    the batch normalised with them; in eval mode, plain batch norm."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return super().forward(x)
        c = x.shape[1]
        sums = torch.distributed.nn.functional.all_reduce(
            torch.cat([x.sum((0, 2, 3)), (x * x).sum((0, 2, 3)), x.new_tensor([x.numel() / c])]))
        n = sums[-1]
        mean = sums[:c] / n
        var = sums[c:2 * c] / n - mean * mean
        with torch.no_grad():
            self.num_batches_tracked.add_(1)
            self.running_mean.lerp_(mean, self.momentum)
            self.running_var.lerp_(var * n / (n - 1), self.momentum)
        shape = (1, c, 1, 1)
        y = (x - mean.view(shape)) * torch.rsqrt(var.view(shape) + self.eps)
        return y * self.weight.view(shape) + self.bias.view(shape)


def sync_batch_norm(module: torch.nn.Module) -> torch.nn.Module:
    """``module`` with each BatchNorm2d normalising over the whole batch of all processes, in place
    (mmsegmentation's SyncBN): torch's SyncBatchNorm on GPUs, ``CpuSyncBatchNorm`` on CPU."""
    if device_of(module).type != "cpu":
        return torch.nn.SyncBatchNorm.convert_sync_batchnorm(module)
    for parent in list(module.modules()):
        for name, child in parent.named_children():
            if type(child) is torch.nn.BatchNorm2d:
                sync = CpuSyncBatchNorm(child.num_features, child.eps, child.momentum)
                sync.load_state_dict(child.state_dict())
                setattr(parent, name, sync.train(child.training))
    return module


def poly_schedule(opt: torch.optim.Optimizer, steps: int,
                  min_lr: float = 0.0) -> torch.optim.lr_scheduler.LRScheduler:
    """Poly decay (power 0.9) of the learning rate over ``steps``, down to ``min_lr``
    (mmsegmentation's PolyLR; torch's PolynomialLR when the floor is 0)."""
    if not min_lr:
        return torch.optim.lr_scheduler.PolynomialLR(opt, total_iters=steps, power=0.9)
    lr = opt.param_groups[0]["lr"]
    return torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: ((lr - min_lr) * (1 - min(s, steps) / steps) ** 0.9 + min_lr) / lr)


def run_steps(train_step: Callable[[int], float | dict], steps: int, parts: dict, config: dict,
              ckpt: Path | None, ckpt_every: int, stop_after: int | None, desc: str, device: torch.device,
              main: bool = True) -> list:
    """Run ``train_step`` from the checkpointed step (or 0) to ``steps``, or pause after step ``stop_after``;
    checkpoint every ``ckpt_every`` steps and at the end (only the ``main`` one of data-parallel
    processes writes, and shows progress). Each step draws torch's random numbers (dropout) from a
    generator seeded by (``config["seed"]``, step), forked so the caller's stays untouched. Returns the
    history of ``train_step`` results."""
    state = checkpoint.load(ckpt, parts, config) or {"step": 0, "history": []}
    start, history = state["step"], state["history"]
    last = min(steps, stop_after or steps)
    quiet = {} if main else {"disable": True}  # unset on the main one, so that TQDM_DISABLE (headless runs) applies
    bar = tqdm(range(start, last), desc=desc, initial=start, total=steps, **quiet)
    for step in bar:
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(int(step_rng(config["seed"], step).integers(2**62)))
            history.append(result := train_step(step))
        bar.set_postfix(loss=f"{result['total'] if isinstance(result, dict) else result:.4f}")
        if main and ckpt is not None and ((step + 1) % ckpt_every == 0 or step + 1 == last):
            checkpoint.save(ckpt, parts, config, step=step + 1, history=history)
    return history


def make_optimizer(params, name: str = "sgd", lr: float = 0.01, weight_decay: float = 1e-4,
                   momentum: float = 0.9) -> torch.optim.Optimizer:
    """The paper's SGD (momentum 0.9, weight decay 1e-4), or Adam (toy segmenters trained from scratch)."""
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    raise ValueError(f"unknown optimizer {name!r}; expected 'sgd' or 'adam'")


def pixel_loss(logits: torch.Tensor, labels: torch.Tensor, accelerator: Accelerator | None = None) -> torch.Tensor:
    """Cross-entropy averaged over the labelled pixels (255 ignored). In data-parallel processes, this
    process's share of the average over all processes' pixels, scaled so that DDP's averaging of
    gradients gives the gradient of that average."""
    if accelerator is None:
        return F.cross_entropy(logits.float(), labels, ignore_index=IGNORE_INDEX)
    total = F.cross_entropy(logits.float(), labels, ignore_index=IGNORE_INDEX, reduction="sum")
    count = accelerator.reduce((labels != IGNORE_INDEX).sum(), "sum")
    return total * accelerator.num_processes / count.clamp(min=1)


@phase("segmenter training")
def train_supervised(model: torch.nn.Module, batches: Batches, steps: int, lr: float = 0.01,
                     weight_decay: float = 1e-4, momentum: float = 0.9, optimizer: str = "sgd",
                     desc: str = "segmenter", augmentation: bool = False, seed: int = 0,
                     ckpt: Path | None = None, ckpt_every: int = 100, stop_after: int | None = None,
                     mixed_precision: bool = True, min_lr: float = 0.0,
                     accelerator: Accelerator | None = None) -> list[float]:
    """Cross-entropy ignoring 255 (``pixel_loss``; a ``WithAuxHead`` model adds its auxiliary loss with
    its weight) with the poly schedule (``poly_schedule``, down to ``min_lr``); SGD as in the paper, or
    Adam; optional crop-and-flip ``augment``; ``Precision(mixed=mixed_precision)``. With ``ckpt``,
    resumes from and saves to that file (every ``ckpt_every`` steps and at the end, or after step
    ``stop_after``). With an ``accelerator`` (``data_parallel``), ``batches`` serve this process's share
    of each batch, and the model trains under DDP with ``sync_batch_norm``. Returns the losses."""
    if accelerator:
        sync_batch_norm(model)
    device = accelerator.device if accelerator else device_of(model)
    precision = Precision(device, mixed_precision)
    opt = make_optimizer(model.parameters(), optimizer, lr, weight_decay, momentum)
    sched = poly_schedule(opt, steps, min_lr)
    parts = {"model": model, "opt": opt, "sched": sched, **precision.parts()}
    config = {"steps": steps, "lr": lr, "weight_decay": weight_decay, "momentum": momentum, "optimizer": optimizer,
              "augmentation": augmentation, "seed": seed, "mixed_precision": mixed_precision, "min_lr": min_lr}
    net, step_opt = accelerator.prepare(model, opt) if accelerator else (model, opt)

    def train_step(step: int) -> float:
        rng = step_rng(seed, step)
        images, labels = batches(step)[:2]
        if augmentation:
            images, labels, _ = augment(images, labels, rng)
        y = torch.from_numpy(labels).long().to(device)
        with precision.autocast():
            out = net(to_tensor(images).to(device))
            if isinstance(out, tuple):
                loss = pixel_loss(out[0], y, accelerator) + model.weight * pixel_loss(out[1], y, accelerator)
            else:
                loss = pixel_loss(out, y, accelerator)
        precision.step(loss, step_opt)
        sched.step()
        return (accelerator.reduce(loss.detach(), "mean") if accelerator else loss).item()

    model.train()
    main = accelerator is None or accelerator.is_main_process
    losses = run_steps(train_step, steps, parts, config, ckpt, ckpt_every, stop_after, desc, device, main)
    model.eval()
    return losses


@torch.no_grad()
def predict(model: torch.nn.Module, images: np.ndarray, batch_size: int = 64) -> np.ndarray:
    """Label maps (N, H, W) uint8 for uint8 images (N, H, W, 3)."""
    model.eval()
    out = [model(to_tensor(images[i:i + batch_size]).to(device_of(model))).argmax(1).cpu()
           for i in range(0, len(images), batch_size)]
    return torch.cat(out).byte().numpy()


@phase("evaluation")
def evaluate_set(predict: Callable[[np.ndarray], np.ndarray], items: Sequence[tuple[np.ndarray, ...]],
                 num_classes: int, accelerator: Accelerator | None = None, chunk: int = 64) -> dict:
    """``metrics.scores`` of a predictor (images -> label maps) over all pixels of ``items`` (image,
    label, ...), each at its own size: one confusion matrix, 255 ignored. Images of one size in a run
    of ``chunk`` items are predicted together; with an ``accelerator`` (``data_parallel``), each process
    takes every n-th run and the matrices are summed."""
    conf = np.zeros((num_classes, num_classes), np.int64)
    n = accelerator.num_processes if accelerator else 1
    rank = accelerator.process_index if accelerator else 0
    for start in range(chunk * rank, len(items), chunk * n):
        run = [items[i][:2] for i in range(start, min(start + chunk, len(items)))]
        for _, same in groupby(sorted(run, key=lambda item: item[0].shape), key=lambda item: item[0].shape):
            images, labels = (np.stack(x) for x in zip(*same))
            conf += confusion_matrix(predict(images), labels, num_classes)
    if accelerator:
        conf = accelerator.reduce(torch.from_numpy(conf).to(accelerator.device), "sum").cpu().numpy()
    return scores(conf)


@phase("evaluation")
def evaluate(model: torch.nn.Module | Callable[[np.ndarray], np.ndarray], images: np.ndarray,
             labels: np.ndarray, num_classes: int) -> dict:
    """Per-class IoU, mIoU and pixel accuracy (``metrics.scores``, 255 ignored) of a model, or of a
    function images -> label maps such as ``beco.predict_ensemble`` with its networks bound."""
    pred = predict(model, images) if isinstance(model, torch.nn.Module) else model(images)
    return scores(confusion_matrix(pred, labels, num_classes))
