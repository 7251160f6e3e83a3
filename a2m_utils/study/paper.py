"""The paper (Yoshihashi et al.): its reported numbers (Tables 1-6) and setting (Sec. 4), for the tables
placed beside ours; where a run departs from that setting; and the rule that says whether Table 4 is reproduced."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..registry import PRESETS, SEGMENTERS, load_plugins

VOC_CLASSES = ("bg", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow", "table",
               "dog", "horse", "motorbike", "person", "plant", "sheep", "sofa", "train", "tv")
TABLE1 = {  # PASCAL VOC 2012 val, per-class IoU and mean
    "real-supervised": (93.6, 88.0, 40.0, 84.5, 66.2, 63.2, 89.3, 84.5, 87.6, 32.4, 74.3, 37.6,
                        83.0, 73.8, 78.1, 86.1, 56.5, 76.4, 45.0, 82.8, 71.5, 71.2),
    "attn2mask": (83.0, 79.5, 33.2, 55.7, 56.6, 56.5, 76.3, 58.3, 70.1, 22.2, 57.0, 34.6,
                  64.7, 64.2, 55.3, 9.0, 17.2, 57.7, 18.7, 63.2, 38.9, 51.1),
    "attn2mask+BECO": (86.6, 77.2, 29.0, 79.0, 72.0, 56.2, 84.8, 68.0, 80.9, 24.9, 76.3, 46.0,
                       73.6, 71.3, 65.9, 19.8, 22.5, 67.8, 7.4, 68.7, 46.1, 58.3),
}
TABLE2 = {  # synthetic images -> VOC val mIoU
    "attn2mask": {2000: 41.2, 10000: 46.5, 50000: 49.7, 168679: 51.1},
    "attn2mask+BECO": {10000: 51.7, 168679: 58.3},
}
TABLE3 = {  # ImageNet-S FG/BG mIoU at 10k and 100k images
    "real-supervised": {10000: 82.1},
    "BigDatasetGAN": {10000: 74.1, 100000: 74.4},
    "attn2mask": {10000: 63.7, 100000: 66.0},
}
TABLE4 = {"attn2mask": {"acc": 63.7, "miou": 13.2}, "attn2mask-LoRA": {"acc": 69.7, "miou": 17.1}}  # Cityscapes
TABLE5 = {"threshold 64": 43.5, "threshold 128": 44.6, "otsu": 41.2, "dcrf beta 0": 44.3, "dcrf beta 0.2": 46.5}
TABLE6 = {"attn2mask": 51.1, "NTI on the train set and retraining": 50.6, "NTI on the val set": 47.3}

# Sec. 4: Stable Diffusion 1.4 (the "sd" preset: DDPM, 100 steps, maps of step 50, and Settings' other defaults), images
# of 512x512 pixels; DeepLabv3+ ResNet-50, SGD, base learning rate 0.01, batch 32 (its iteration count is not stated).
PAPER_RUN = {"preset": "sd", "segmenter": "paper", "seg_optimizer": "sgd", "seg_lr": 0.01, "seg_batch_size": 16,
             "seg_steps": 20_000, "seg_protocol": "voc"}  # mmsegmentation's deeplabv3plus 20k VOC schedule
PAPER_IMAGE_SIZE = 512
TABLE4_SPREADS = 3  # Table 4 counts as reproduced only beyond this many seed spreads (table4_verdict)


def _image_size(model: str) -> int | None:
    """The side of the images a local pipeline folder draws by default (``latents.image_size``, read from its
    configs: the U-Net's sample size times the VAE's downsampling); None for a hub id."""
    folder = Path(model)
    if not (folder / "unet" / "config.json").is_file():
        return None
    size = json.loads((folder / "unet" / "config.json").read_text())["sample_size"]
    vae = folder / "vae" / "config.json"
    return size * 2 ** (len(json.loads(vae.read_text())["block_out_channels"]) - 1) if vae.is_file() else size


def _maps(capture_steps: int | Sequence[int] | None, num_steps: int) -> str:
    """Which sampler steps the attention maps average (a notebook's ``capture_steps`` or a preset's)."""
    if capture_steps is None:
        return f"mean over all {num_steps} steps"
    steps = [capture_steps] if isinstance(capture_steps, int) else list(capture_steps)
    if len(steps) == 1:
        return f"step {steps[0]} of {num_steps}"
    return f"mean of steps {steps[0]} to {steps[1] - 1} of {num_steps}"  # a notebook's [a, b]: steps a..b-1


def _setting(parameters: Mapping) -> dict[str, str]:
    """A run's setting in the paper's terms: its recorded ``parameters``, the rest from its preset."""
    load_plugins()  # the toy world's preset
    preset = PRESETS[parameters.get("preset") or "toy"]

    def get(key: str):
        return parameters[key] if key in parameters else getattr(preset.settings, key)

    model = parameters.get("model") or preset.model
    size = PAPER_IMAGE_SIZE if model == PRESETS["sd"].model else _image_size(model)
    setting = {
        "model": Path(model).name if Path(model).is_dir() else model,
        "image size": f"{size}x{size}" if size else "",
        "sampler": f"{parameters.get('scheduler') or preset.scheduler}, {get('num_steps')} steps",
        "attention maps": _maps(get("capture_steps"), get("num_steps")),
        "guidance scale": f"{get('guidance_scale'):g}",
        "beta (Eq. 5)": f"{get('beta'):g}",
        "r (Eq. 6)": f"{get('r'):g}",
    }
    if "segmenter" in parameters:
        arch = SEGMENTERS[parameters["segmenter"]]
        steps = parameters.get("seg_steps")
        setting["segmenter"] = f"{arch['arch']} {arch['encoder_name']}"
        setting["segmenter training"] = (f"{parameters['seg_optimizer']}, learning rate {parameters['seg_lr']:g}, "
                                         f"batch {parameters['seg_batch_size']}"
                                         + (f", {steps} steps" if steps else ""))
        spec = parameters.get("seg_protocol")
        setting["segmenter data"] = (f"mmsegmentation's {spec if isinstance(spec, str) else 'custom'} pipeline, "
                                     "scored at each image's size" if spec else "images as stored, no protocol")
    return setting


def departures(parameters: Mapping) -> list[list[str]]:
    """Where a notebook's run departs from the paper's setting (Sec. 4), as rows [setting, paper, this run]:
    from its recorded ``parameters`` (its metrics.json), the rest from its preset (``registry.PRESETS``)."""
    here, paper = _setting(parameters), _setting(PAPER_RUN)
    return [[k, paper[k], v] for k, v in here.items() if v and v != paper[k]]


@dataclass(frozen=True)
class Verdict:
    """Whether a measured table reproduces the paper's claim, and why, in one line."""

    reproduced: bool
    reason: str

    def __str__(self) -> str:
        return f"{'reproduced' if self.reproduced else 'not reproduced'}: {self.reason}"


def table4_verdict(rows: Sequence[Mapping], floors: Sequence[Mapping], spreads: float = TABLE4_SPREADS) -> Verdict:
    """Table 4's claim, that adaptation helps: in each of the table's columns (mIoU, pixel accuracy) the adapted
    arm (``rows[1]``: means and ``*_std`` over seeds) must beat both the best trivial floor (``readings.floors``)
    and the plain arm (``rows[0]``) by more than ``spreads`` seed spreads (the larger std of the two arms)."""
    base, lora = rows
    short = []
    for key, name in (("mIoU", "mIoU"), ("pixel_acc", "pixel accuracy")):
        margin = spreads * max(base[f"{key}_std"], lora[f"{key}_std"])
        for what, ref in (("the trivial floor", max(f[key] for f in floors)), ("plain attn2mask", base[key])):
            if lora[key] - ref <= margin:
                short.append(f"its {name} {lora[key]:.3f} lies {lora[key] - ref:+.3f} from {what} ({ref:.3f}), "
                             f"not more than {spreads:g} seed spreads ({margin:.3f}) above it")
    if short:
        return Verdict(False, "; ".join(short))
    return Verdict(True, f"the adapted arm beats the trivial floors and plain attn2mask in mIoU and in pixel accuracy "
                         f"by more than {spreads:g} seed spreads")