"""Text attention of an MM-DiT (SD3/3.5, Flux.1): the image-query/text-key block of its joint attention (Eqs. 2-3).

An MM-DiT has no cross-attention layer: a block attends over the joint sequence of image and text
tokens (SD3: [image, text]; Flux: [text, image], with rotary embeddings on q and k), one softmax
over all keys. The part of those probabilities where image queries meet text keys takes the place of
Eq. 2's map. What the capture takes, and why:

- Layers: every attention that sees the text. SD3: each joint block's ``attn`` (SD3.5's second,
  image-only ``attn2`` sees none). Flux: the double-stream blocks and the single-stream ones too,
  which attend over [text, image] as one sequence, so their image->text block exists as well (38 of
  Flux.1's 57 attention layers). Heads and layers are averaged as for a U-Net; all layers share one
  resolution, the patch grid.
- Renormalised over the text keys: the block's rows are divided by their sum over the text keys,
  which makes them softmax(q_img k_text^T / sqrt(d)) over the text alone: Eq. 2's softmax, a
  row-stochastic map over tokens as a U-Net's. Unrenormalised, a map would carry the share of its
  pixel's attention that goes to the text at all, which varies by layer, step and pixel, and the
  layer average would weight layers by it rather than by where each word is. It also keeps the
  capture cheap: only q_img k_text^T (N x L) is computed, never the N x N image block.
- The layer's own queries and keys: read from its projection or RMS-norm modules (``norm_q``,
  ``norm_added_k``, ...) as its own processor runs, which still computes the layer's output;
  Flux's rotary embedding is then applied to them as that processor does.
- Guidance: SD3 batches [unconditional, conditional] under classifier-free guidance, and the
  conditional half is kept. Flux.1-dev is guidance-distilled: the scale is an input of the
  transformer and the batch holds conditional samples only.

``sd3_processors``/``flux_processors`` and ``sd3_inputs``/``flux_inputs`` are the two kinds'
parts of ``capture.KINDS``.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from contextlib import contextmanager

import torch
from diffusers.models.attention_processor import JointAttnProcessor2_0
from diffusers.models.embeddings import apply_rotary_emb
from diffusers.models.transformers.transformer_flux import FluxAttnProcessor


def image_to_text(q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Eq. 2 on an MM-DiT: softmax(q k^T / sqrt(d)) over the text keys, in float32, from image queries
    ``q`` (B, N, heads, d) and text keys ``k`` (B, L, heads, d): (B, heads, N, L), rows summing to 1.
    Equal to the image->text block of the joint softmax renormalised over the text keys."""
    return torch.einsum("bnhd,blhd->bhnl", q.float(), k.float()).mul_(q.shape[-1] ** -0.5).softmax(-1)


@contextmanager
def _outputs(*modules: torch.nn.Module) -> Iterator[list]:
    """The output of each module during the block (forward hooks, removed on exit)."""
    seen = [None] * len(modules)

    def keep(i):
        return lambda module, args, out: seen.__setitem__(i, out)

    handles = [m.register_forward_hook(keep(i)) for i, m in enumerate(modules)]
    try:
        yield seen
    finally:
        for h in handles:
            h.remove()


class JointCaptureProcessor:
    """Processor of a captured forward on an MM-DiT attention layer: runs the layer's own processor,
    records its image queries and text keys on the way, and adds their image->text map to the store."""

    def __init__(self, store, original) -> None:
        self.store, self.original = store, original

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, image_rotary_emb=None):
        with _outputs(*self.sources(attn, encoder_hidden_states is not None)) as seen:
            out = self.original(attn, hidden_states, encoder_hidden_states, attention_mask, image_rotary_emb)
        q, k = self.image_text(attn, *seen, image_rotary_emb)
        self.store.add_cross(image_to_text(self.store.conditional(q), self.store.conditional(k)))
        return out


class SD3Capture(JointCaptureProcessor):
    """SD3/3.5 (``JointAttnProcessor2_0``): queries of the image stream, keys of the text stream, [image, text]."""

    @staticmethod
    def sources(attn, with_text: bool) -> tuple[torch.nn.Module, torch.nn.Module]:
        return (attn.to_q if attn.norm_q is None else attn.norm_q,
                attn.add_k_proj if attn.norm_added_k is None else attn.norm_added_k)

    @staticmethod
    def image_text(attn, q, k, rotary) -> tuple[torch.Tensor, torch.Tensor]:
        """Projections (B, S, heads * d), or RMS norms' outputs (B, heads, S, d) -> (B, S, heads, d)."""
        return tuple(x.unflatten(-1, (attn.heads, -1)) if x.ndim == 3 else x.transpose(1, 2) for x in (q, k))


class FluxCapture(JointCaptureProcessor):
    """Flux.1 (``FluxAttnProcessor``): RMS-normed q and k (B, S, heads, d), [text, image], rotary embeddings;
    a double-stream block's query is the image's and its added key the text's, a single-stream block's
    are both of the joint sequence."""

    @staticmethod
    def sources(attn, with_text: bool) -> tuple[torch.nn.Module, torch.nn.Module]:
        return attn.norm_q, attn.norm_added_k if with_text else attn.norm_k

    def image_text(self, attn, q, k, rotary) -> tuple[torch.Tensor, torch.Tensor]:
        cos, sin = rotary  # over the joint sequence [text, image]
        text = len(cos) - math.prod(self.store.grid)
        return (apply_rotary_emb(q[:, text - len(cos):], (cos[text:], sin[text:]), sequence_dim=1),
                apply_rotary_emb(k[:, :text], (cos[:text], sin[:text]), sequence_dim=1))


def _joint_processors(originals: Mapping[str, object], store, layers: tuple[str, ...], expected: type,
                      capture: type) -> dict[str, object]:
    """``originals`` with a ``capture`` processor on the joint attention of the blocks named ``layers`` (prefixes)."""
    if store.config.self_attention_res is not None:
        raise ValueError("self-attention capture (self_attention_res) is for U-Nets; an MM-DiT's image "
                         "self-attention is not captured")
    chosen = [n for n in originals if n.startswith(layers) and n.endswith(".attn.processor")]
    odd = {n: type(originals[n]).__name__ for n in chosen if type(originals[n]) is not expected}
    if odd:
        name, proc = next(iter(odd.items()))
        raise ValueError(f"{len(odd)} attention layers run another processor than diffusers' {expected.__name__} "
                         f"(e.g. {name}: {proc}); the capture reads that processor's queries and keys: restore "
                         "it (unfuse_qkv_projections, unload IP-Adapters) before tracing")
    return {n: capture(store, p) if n in chosen else p for n, p in originals.items()}


def sd3_processors(originals: Mapping[str, object], store) -> dict[str, object]:
    """SD3's processors with the joint blocks' ``attn`` capturing."""
    return _joint_processors(originals, store, ("transformer_blocks.",), JointAttnProcessor2_0, SD3Capture)


def flux_processors(originals: Mapping[str, object], store) -> dict[str, object]:
    """Flux's processors with the double- and single-stream blocks' ``attn`` capturing."""
    return _joint_processors(originals, store, ("transformer_blocks.", "single_transformer_blocks."),
                             FluxAttnProcessor, FluxCapture)


def sd3_inputs(model, inputs: Mapping[str, object]) -> tuple[tuple[int, int], object] | None:
    """SD3's patch grid and timestep; None for the extra forward of skip-layer guidance (``skip_layers``),
    which is no denoising step of its own."""
    if inputs.get("skip_layers") is not None:
        return None
    p = model.config.patch_size
    h, w = inputs["hidden_states"].shape[-2:]
    return (h // p, w // p), inputs["timestep"]


def flux_inputs(model, inputs: Mapping[str, object]) -> tuple[tuple[int, int], object]:
    """Flux's patch grid, from the image tokens' position ids (row, column), and the scheduler's timestep
    (Flux pipelines pass it divided by 1000)."""
    ids = inputs["img_ids"]
    return (int(ids[..., 1].max()) + 1, int(ids[..., 2].max()) + 1), inputs["timestep"] * 1000
