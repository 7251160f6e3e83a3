"""The kit's public entry point: watch the user's own ``pipe(...)`` call and label what it drew.

    with a2m.trace(pipe, steps=50) as t:
        out = pipe("a dog and a cat on a sofa", num_inference_steps=100, generator=g)
    pm = t.pseudo_masks(classes=a2m.VOC)  # Eqs. 4-6 and dense CRF, one per image

``trace`` installs the capturing processor on the pipeline's denoiser (Eqs. 1-3,
``capture.capture_attention``: a U-Net's cross-attention, an SD3 or Flux transformer's joint
attention) and, for the call's duration, wraps two instance methods that every diffusers
text-to-image pipeline calls: ``encode_prompt`` (to learn the prompts and whether
classifier-free guidance doubles the batch) and ``image_processor.postprocess`` (to keep the
decoded images for the dense CRF). Everything is restored on exit. One trace covers one
pipeline call. The maps' token axis is the denoiser's text sequence; its ``TextLayout`` says
which tokenizer's tokens label it (Eq. 4), so the rest never asks which architecture made them.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import torch

from . import masks
from .capture import AttentionStore, Steps, attention_kind, capture_attention, denoiser
from .classes import ClassVocab
from .images import to_uint8
from .phases import phase
from .tokens import ClassWordLostError, NoClassInPromptError, class_positions


class TraceError(RuntimeError):
    """A trace used in a way it cannot serve (two pipeline calls, or no prompts or images seen)."""


@dataclass(frozen=True)
class TextPart:
    """One tokenizer's tokens in the denoiser's text sequence: positions ``start`` to ``stop`` (None: the end)."""

    tokenizer: object
    start: int = 0
    stop: int | None = None


@dataclass(frozen=True)
class TextLayout:
    """The denoiser's text sequence, part by part (keyed by the pipeline's tokenizer attribute), and
    the part whose tokens label the maps (Eq. 4's tau_c)."""

    parts: dict[str, TextPart]
    labels: str

    @property
    def tokenizer(self):
        return self.parts[self.labels].tokenizer

    def tokens(self, attn: np.ndarray) -> np.ndarray:
        """The maps (B, sequence, h, w) of the labelling part's tokens."""
        part = self.parts[self.labels]
        return attn[:, part.start:part.stop]


def text_layout(pipe) -> TextLayout:
    """The text sequence of ``pipe``'s denoiser and the tokens that label it.

    - U-Nets: the tokenizer's sequence (SDXL's two CLIP tokenizers tokenize alike, their features side by side).
    - Flux: T5's sequence (``tokenizer_2``); CLIP gives only a pooled vector.
    - SD3: CLIP's 77 tokens (its two CLIPs tokenize alike), then T5's (``tokenizer_3``). T5's label: a
      bidirectional encoder, so a token carries its own word in context, where CLIP's causal encoder
      carries all the words before it into every later token; the same tokens as Flux's; and room for
      longer captions. Without T5 (``text_encoder_3=None``, its part zeros), CLIP's label.
    """
    kind = attention_kind(denoiser(pipe)).name
    if kind == "flux":
        return TextLayout({"tokenizer_2": TextPart(pipe.tokenizer_2)}, "tokenizer_2")
    if kind == "sd3":
        clip = pipe.tokenizer_max_length
        parts = {"tokenizer": TextPart(pipe.tokenizer, 0, clip), "tokenizer_3": TextPart(pipe.tokenizer_3, clip)}
        return TextLayout(parts, "tokenizer" if pipe.text_encoder_3 is None else "tokenizer_3")
    return TextLayout({"tokenizer": TextPart(pipe.tokenizer)}, "tokenizer")


def _check_kept(positions: dict[str, list[int]], tokens: int, prompt: str) -> None:
    """Eq. 4's positions must lie before the end token of the captured sequence: SD3 and Flux pipelines
    cut T5's text at their ``max_sequence_length``, below the tokenizer's own limit."""
    cut = [name for name, pos in positions.items() if max(pos) >= tokens - 1]
    if cut:
        raise ClassWordLostError(
            f"prompt {prompt!r}: the class {', '.join(map(repr, cut))} past the pipeline's text length of {tokens} "
            "tokens is cut off; shorten the prompt, raise max_sequence_length or skip such prompts",
            prompt, cut, "with a class word past the token limit")


@dataclass
class Trace:
    """What one traced pipeline call produced: attention, prompts and images, per image of the batch."""

    store: AttentionStore
    layout: TextLayout
    prompts: list[str] | None = None
    images: np.ndarray | None = None  # (B, H, W, 3) uint8
    calls: int = 0
    skipped: list[tuple[int, str]] = field(default_factory=list)  # (image index, reason) of the last pseudo_masks

    @property
    def tokenizer(self):
        """The tokenizer whose sequence ``attention()`` indexes (Eq. 4's positions)."""
        return self.layout.tokenizer

    @property
    def steps_used(self) -> list[tuple[int, float]]:
        """(step index, scheduler timestep) of every captured step."""
        return self.store.steps_used

    @property
    def resolutions(self) -> list[tuple[int, int]]:
        return self.store.resolutions

    def attention(self, resolution: tuple[int, int] | None = None) -> np.ndarray:
        """Token attention (B, tokens, h, w) over the sequence of ``self.tokenizer``, at the model's input
        size: mean over heads, captured steps and layers (of one ``resolution`` if given), conditional half
        only (Eq. 3). The maps of the denoiser's whole text sequence: ``store.cross_attention()``."""
        return self.layout.tokens(self.store.cross_attention(resolution).cpu().numpy())

    def self_attention(self) -> np.ndarray:
        """Self-attention (B, N, N) at the resolution asked for with ``self_attention_res``."""
        return self.store.self_attention().cpu().numpy()

    def word_maps(self, index: int = 0) -> tuple[list[str], np.ndarray]:
        """The words of prompt ``index`` and their normalised maps, for display."""
        return masks.word_maps(self.attention()[index], self._prompts()[index], self.tokenizer)

    def _prompts(self) -> list[str]:
        if self.prompts is None:
            raise TraceError("the traced call passed no prompt text (prompt_embeds?); give prompts=[...]")
        return self.prompts

    def pseudo_masks(self, classes: ClassVocab, method: str = "dcrf", beta: float = 0.2, r: float = 0.5,
                     theta: float = 128, attributes: Sequence[str] = (),
                     expected: Sequence[Sequence[str]] | None = None, prompts: Sequence[str] | None = None,
                     images: np.ndarray | None = None, on_missing: str = "raise") -> list[masks.PseudoMask | None]:
        """One pseudo-mask per image: tau_c from the prompt (Eq. 4), A_0 (Eq. 5), R (Eq. 6), ``method``.

        ``expected``: the classes each prompt must name. A prompt whose class words are missing,
        unknown to the tokenizer or cut off by its length limit raises ``NoClassInPromptError``,
        or with ``on_missing="skip"`` gives None, its reason kept in ``self.skipped``."""
        if on_missing not in ("raise", "skip"):
            raise ValueError(f"on_missing must be 'raise' or 'skip', not {on_missing!r}")
        texts = list(prompts) if prompts is not None else self._prompts()
        pictures = self.images if images is None else np.asarray(images)
        attn = self.attention()
        if len(texts) != len(attn):
            raise TraceError(f"{len(texts)} prompts for a batch of {len(attn)} images")
        if pictures is None:
            raise TraceError("no images were seen (output_type='latent'?); give images=[...] as uint8 (B, H, W, 3)")
        out, self.skipped = [], []
        for b, (text, image) in enumerate(zip(texts, pictures)):
            try:
                positions = class_positions(text, self.tokenizer, classes, attributes=attributes,
                                            expected=None if expected is None else expected[b])
                _check_kept(positions, attn.shape[1], text)
            except NoClassInPromptError as err:
                if on_missing == "raise":
                    raise
                out.append(None)
                self.skipped.append((b, str(err)))
                continue
            ids = [classes.index(n) for n in positions]
            pm = masks.pseudo_mask(masks.class_maps(attn[b], positions), ids, image, method, beta, r, theta)
            pm.positions = positions
            out.append(pm)
        return out


def _wrap_encode_prompt(pipe, t: Trace):
    original = pipe.encode_prompt
    signature = inspect.signature(original)

    def encode_prompt(*args, **kwargs):
        if t.store.step_index >= 0:
            raise TraceError("a trace covers one pipeline call; open a new trace for each call")
        t.calls += 1
        bound = signature.bind_partial(*args, **kwargs).arguments
        if t.calls > 1:  # the negative prompt encoded apart runs as a forward of its own after the conditional one
            t.store.reconfigure(forwards_per_step=t.calls)  # (Flux's true CFG)
            return original(*args, **kwargs)
        prompt, n = bound.get("prompt"), bound.get("num_images_per_prompt") or 1
        if prompt is not None:
            t.prompts = [p for p in ([prompt] if isinstance(prompt, str) else prompt) for _ in range(n)]
        if "do_classifier_free_guidance" in bound and t.store.resolve_guidance is not None:
            t.store.reconfigure(guidance=bool(bound["do_classifier_free_guidance"]))
            t.store.resolve_guidance = None
        return original(*args, **kwargs)
    return original, encode_prompt


def _wrap_postprocess(processor, t: Trace):
    original = processor.postprocess

    def postprocess(image, *args, **kwargs):
        output_type = kwargs.get("output_type", args[0] if args else "pil")
        if isinstance(image, torch.Tensor) and output_type != "latent":  # latents pass through unchanged
            t.images = to_uint8(image.float())
        return original(image, *args, **kwargs)
    return original, postprocess


@contextmanager
def trace(pipe, steps: Steps = None, self_attention_res: int | None = None,
          guidance: bool | None = None) -> Iterator[Trace]:
    """Capture the text attention of the denoising steps ``steps`` (step indices, 0 = first; an
    int, a range, a list, or None for all) during one ``pipe(...)`` call inside the block.

    ``guidance``: whether the denoiser's batch is [unconditional, conditional]; by default read from
    the pipeline (its ``encode_prompt`` argument, else ``pipe.do_classifier_free_guidance``, else
    the model's kind: Flux's batch has no unconditional half). ``self_attention_res``: also keep
    a U-Net's self-attention at that layer resolution (refinement)."""
    with capture_attention(denoiser(pipe), steps=steps, guidance=guidance,
                           self_attention_res=self_attention_res) as store:
        t = Trace(store, text_layout(pipe))
        if guidance is None:
            store.resolve_guidance = lambda: bool(getattr(pipe, "do_classifier_free_guidance", store.guidance))
        patched = []
        if hasattr(pipe, "encode_prompt"):
            patched.append((pipe, "encode_prompt", *_wrap_encode_prompt(pipe, t)))
        if hasattr(pipe, "image_processor"):
            patched.append((pipe.image_processor, "postprocess", *_wrap_postprocess(pipe.image_processor, t)))
        shadowed = [name in vars(owner) for owner, name, _, _ in patched]
        for owner, name, _, wrapper in patched:
            setattr(owner, name, wrapper)
        try:
            yield t
        finally:
            for (owner, name, original, _), own in zip(patched, shadowed):
                if own:
                    setattr(owner, name, original)
                else:
                    delattr(owner, name)  # the class's method shows again


AUTOCAST = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}  # sampling and inversion precisions


def autocast(pipe, precision: str) -> torch.autocast:
    """``precision``: "fp32" (the weights' own dtype), or "bf16"/"fp16" autocast on the pipeline's device."""
    if precision not in AUTOCAST:
        raise ValueError(f"unknown precision {precision!r}; expected one of {sorted(AUTOCAST)}")
    dtype = AUTOCAST[precision]
    return torch.autocast(pipe.device.type, dtype=dtype, enabled=dtype is not None)


@phase("generation")
def generate(pipe, prompts: Sequence[str], seeds: Sequence[int], steps: Steps = None,
             self_attention_res: int | None = None, precision: str = "fp32", **call_kwargs) -> Trace:
    """``pipe(prompts, ...)`` under ``trace``, image i drawn from ``torch.Generator().manual_seed(seeds[i])``
    (on the CPU, so a seed gives the same noise on every device); ``call_kwargs`` go to the pipeline.
    ``precision``: as ``autocast``."""
    if len(prompts) != len(seeds):
        raise ValueError(f"{len(prompts)} prompts but {len(seeds)} seeds")
    generators = [torch.Generator().manual_seed(int(s)) for s in seeds]
    with autocast(pipe, precision), trace(pipe, steps=steps, self_attention_res=self_attention_res) as t:
        pipe(list(prompts), generator=generators, output_type="pt", **call_kwargs)
    return t
