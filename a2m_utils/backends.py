"""The two model back-ends behind one interface: the toy model and Stable Diffusion.

A ``Backend`` holds the diffusers / transformers components that sampling, attention
capture, null-text inversion and LoRA need; ``vae`` is None for the pixel-space toy model.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import torch
from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
from transformers import AutoTokenizer, CLIPTextModel

SD_DEFAULT = "CompVis/stable-diffusion-v1-4"
TOY_DEFAULT = Path(__file__).resolve().parent.parent / "models" / "toy-t2i"
PARTS = ("unet", "text_encoder", "tokenizer", "scheduler")


def local_causal_mask(length: int, window: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Additive attention mask (1, 1, L, L): token i sees tokens i - window + 1 .. i."""
    i = torch.arange(length)
    seen = (i[None, :] <= i[:, None]) & (i[:, None] - i[None, :] < window)
    return torch.zeros(length, length, dtype=dtype).masked_fill(~seen, torch.finfo(dtype).min)[None, None]


@dataclass
class Backend:
    unet: UNet2DConditionModel
    text_encoder: CLIPTextModel
    tokenizer: object
    scheduler: DDPMScheduler
    vae: AutoencoderKL | None = None
    name: str = "toy"

    @property
    def device(self) -> torch.device:
        return self.unet.device

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        s = self.unet.config.sample_size
        return (self.unet.config.in_channels, s, s)

    @property
    def image_size(self) -> int:
        scale = 2 ** (len(self.vae.config.block_out_channels) - 1) if self.vae is not None else 1
        return self.unet.config.sample_size * scale

    def encode(self, prompts: list[str]) -> torch.Tensor:
        """Text embeddings (batch, tokens, width), padded to the tokenizer's length."""
        ids = self.tokenizer(prompts, padding="max_length", truncation=True,
                             max_length=self.tokenizer.model_max_length, return_tensors="pt").input_ids
        window = getattr(self.text_encoder.config, "attention_window", None)
        device = self.text_encoder.device
        mask = None if window is None else local_causal_mask(ids.shape[1], window, self.text_encoder.dtype).to(device)
        return self.text_encoder(ids.to(device), attention_mask=mask)[0]

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Latents to images in [-1, 1] (the identity for a pixel-space model)."""
        if self.vae is None:
            return latents
        return self.vae.decode(latents.to(self.vae.dtype) / self.vae.config.scaling_factor).sample.float()

    def fingerprint(self) -> str:
        """sha256 of the U-Net's and text encoder's weights (LoRA included): which model made a dataset."""
        h = hashlib.sha256()
        for module in (self.unet, self.text_encoder):
            for name, t in sorted(module.state_dict().items()):
                h.update(name.encode())
                h.update(t.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
        return h.hexdigest()

    def save(self, path: str | Path) -> None:
        for part in PARTS:
            getattr(self, part).save_pretrained(Path(path) / part)


def load_toy(path: str | Path = TOY_DEFAULT) -> Backend:
    """The toy model saved by ``Backend.save`` (a diffusers-style folder without a VAE)."""
    path = Path(path)
    missing = [p for p in PARTS if not (path / p).is_dir()]
    if missing:
        raise FileNotFoundError(f"{path} is not a toy model folder: missing {missing}")
    try:
        return Backend(
            UNet2DConditionModel.from_pretrained(path / "unet"),
            CLIPTextModel.from_pretrained(path / "text_encoder"),
            AutoTokenizer.from_pretrained(path / "tokenizer"),
            DDPMScheduler.from_pretrained(path / "scheduler"),
            name="toy",
        )
    except (OSError, ValueError, RuntimeError) as err:
        raise OSError(f"the toy model at {path} is unreadable ({type(err).__name__}: {err}); "
                      "restore it with git checkout or retrain it (notebook 00)") from err


def load_stable_diffusion(model: str | Path = SD_DEFAULT, device: str = "cpu",
                          dtype: torch.dtype = torch.float32) -> Backend:
    """A Stable Diffusion 1.x checkpoint (hub id or local folder) with a DDPM scheduler (the paper's)."""
    from diffusers import StableDiffusionPipeline

    local = isinstance(model, Path) or str(model).startswith(("/", ".", "~"))
    if local and not Path(model).expanduser().is_dir():
        raise FileNotFoundError(f"cannot load the Stable Diffusion checkpoint {str(model)!r}: no such folder")
    try:
        source = str(Path(model).expanduser()) if local else model
        pipe = StableDiffusionPipeline.from_pretrained(source, torch_dtype=dtype, safety_checker=None,
                                                       requires_safety_checker=False)
    except (OSError, ValueError) as err:
        raise FileNotFoundError(
            f"cannot load the Stable Diffusion checkpoint {str(model)!r}: {err}. Give a local folder "
            "in diffusers layout, or a hub id on a machine that can download it"
        ) from err
    pipe.to(device)
    scheduler = DDPMScheduler.from_config(pipe.scheduler.config)
    return Backend(pipe.unet, pipe.text_encoder, pipe.tokenizer, scheduler, pipe.vae, name=str(model))


def load_backend(kind: str, model: str | Path | None = None, device: str = "cpu") -> Backend:
    """``kind`` 'toy' or 'sd'; ``model`` a folder or hub id (default: the committed toy model / SD 1.4)."""
    if kind == "toy":
        return load_toy(model or TOY_DEFAULT)
    if kind == "sd":
        return load_stable_diffusion(model or SD_DEFAULT, device=device,
                                     dtype=torch.float16 if device.startswith("cuda") else torch.float32)
    raise ValueError(f"unknown back-end {kind!r}; expected 'toy' or 'sd'")
