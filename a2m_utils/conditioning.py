"""What the U-Net takes besides the latent and the timestep, for the kit's own denoising loops
(null-text inversion, LoRA training), made by the pipeline's own ``encode_prompt`` as its ``__call__`` does.

Stable Diffusion 1.x/2.x and the toy pipeline condition on the token embeddings alone; SDXL adds,
through ``added_cond_kwargs``, its second text encoder's pooled embedding and six size ids
(original size, crop corner, target size: here the image's own size, uncropped).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from .latents import image_size


@dataclass
class Conditioning:
    """A batch's text conditioning: what cross-attention attends to, and SDXL's added conditions."""

    embeds: torch.Tensor  # (B, tokens, width)
    added: dict[str, torch.Tensor] = field(default_factory=dict)  # SDXL: text_embeds (B, pooled), time_ids (B, 6)

    def with_embeds(self, embeds: torch.Tensor) -> Conditioning:
        return Conditioning(embeds, self.added)

    def cat(self, other: Conditioning) -> Conditioning:
        """This batch followed by ``other`` (classifier-free guidance: [unconditional, conditional])."""
        return Conditioning(torch.cat([self.embeds, other.embeds]),
                            {k: torch.cat([v, other.added[k]]) for k, v in self.added.items()})


def _encode(pipe, prompts: Sequence[str], guidance: bool) -> list[Conditioning]:
    out = pipe.encode_prompt(list(prompts), device=pipe.unet.device, num_images_per_prompt=1,
                             do_classifier_free_guidance=guidance)
    if len(out) == 2:  # (embeddings, unconditional ones or None)
        return [Conditioning(e) for e in out if e is not None]
    embeds, negative, pooled, negative_pooled = out  # SDXL
    side = image_size(pipe)
    time_ids = pipe._get_add_time_ids((side, side), (0, 0), (side, side), pooled.dtype,
                                      text_encoder_projection_dim=pooled.shape[-1]).to(pooled.device)
    time_ids = time_ids.repeat(len(pooled), 1)
    return [Conditioning(e, {"text_embeds": p, "time_ids": time_ids})
            for e, p in ((embeds, pooled), (negative, negative_pooled)) if e is not None]


def condition(pipe, prompts: Sequence[str]) -> Conditioning:
    """The prompts' conditioning."""
    return _encode(pipe, prompts, guidance=False)[0]


def guidance_pair(pipe, prompts: Sequence[str]) -> tuple[Conditioning, Conditioning]:
    """(conditional, unconditional) of the prompts as the pipeline guides them: the unconditional is the
    empty prompt's, or zeros where the pipeline says so (SDXL's ``force_zeros_for_empty_prompt``)."""
    cond, uncond = _encode(pipe, prompts, guidance=True)
    return cond, uncond


def predict_noise(pipe, latent: torch.Tensor, t, cond: Conditioning) -> torch.Tensor:
    """The U-Net's output for a batch of latents, each with its own conditioning, in float32."""
    dtype = pipe.unet.dtype
    added = {k: v.to(dtype) for k, v in cond.added.items()} or None
    return pipe.unet(latent.to(dtype), t, cond.embeds.to(dtype), added_cond_kwargs=added).sample.float()
