"""Cross-attention capture through diffusers' attention-processor API (Eqs. 1-3).

One function per equation, on one diffusers ``Attention`` layer: ``attention_probs`` (Eq. 2),
``attend`` (Eq. 1), ``token_maps`` (Eq. 3); ``layer_inputs`` records what enters one layer, to
call them on a real example. ``capture_attention(model, ...)`` installs a capturing processor on the
text-attention layers of the denoising model for the forwards of the selected denoising steps, and
the original processors for all others. One processor per attention kind, chosen by the model's class
(``KINDS``): a ``UNet2DConditionModel``'s cross-attention (``attn2``) layers, here, and the joint
attention of an MM-DiT (SD3, Flux), in ``joint``. On a U-Net the processor computes the attention
probabilities A(Q, K) = softmax(QK^T / sqrt(d)) explicitly (Eq. 2). Either kind keeps the conditional
half of a classifier-free-guidance batch, averages over heads, resizes the map of every layer to one
resolution and adds it to a running sum, so memory does not grow with the number of steps. At all
other steps, and on every self-attention layer, the original (fast, fused) processor runs untouched.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field, replace
from functools import cached_property

import torch
import torch.nn.functional as F
from diffusers import FluxTransformer2DModel, SD3Transformer2DModel, UNet2DConditionModel

from . import joint

Steps = int | range | Sequence[int] | None


def attention_probs(attn, f: torch.Tensor, s: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Eq. 2: A(Q, K) = Softmax(QK^T / sqrt(dim K)) of the ``Attention`` layer ``attn``, the queries Q
    from the image features ``f`` (B, N, C), the keys K from the text embedding ``s`` (B, L, D); per
    head: (B * heads, N, L), each location's row summing to 1 over the L tokens."""
    query = attn.head_to_batch_dim(attn.to_q(f))
    key = attn.head_to_batch_dim(attn.to_k(s))
    return attn.get_attention_scores(query, key, mask)


def attend(attn, probs: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """Eq. 1: Transformer(Q, K, V) = A(Q, K) V, the values V from the text embedding ``s``, heads
    merged again: (B, N, heads * d), before the layer's output projection ``attn.to_out``."""
    return attn.batch_to_head_dim(torch.bmm(probs, attn.head_to_batch_dim(attn.to_v(s))))


def token_maps(probs: torch.Tensor, heads: int, hw: tuple[int, int]) -> torch.Tensor:
    """Eq. 3: attention probabilities (B * heads, N, L) of a layer of spatial size ``hw`` (h * w = N)
    as one map per token, mean over heads: (B, L, h, w), the paper's W x H x L, channels first."""
    return probs.unflatten(0, (-1, heads)).float().mean(1).transpose(1, 2).unflatten(2, tuple(hw))


def _layer_hw(grid: tuple[int, int], tokens: int) -> tuple[int, int]:
    """Spatial size of a layer whose query has ``tokens`` positions, for a model input of size ``grid``."""
    H, W = grid
    f = math.sqrt(H * W / tokens)
    h, w = round(H / f), round(W / f)
    if h * w != tokens:
        raise ValueError(f"cannot infer the layout of {tokens} query tokens for an input of {H}x{W}")
    return h, w


def _step_set(steps: Steps) -> frozenset[int] | None:
    if steps is None:
        return None
    chosen = frozenset([steps] if isinstance(steps, int) else steps)
    if not chosen or min(chosen) < 0:
        raise ValueError(f"steps must be non-negative step indices, got {steps!r}")
    return chosen


@dataclass(frozen=True)
class CaptureConfig:
    """What a capture keeps.

    ``steps``: the denoising step indices to capture (0 = first step); an int, a range (a window),
    a sequence, or None for all. ``guidance``: the model's batch is [unconditional, conditional] and
    only the conditional half is kept. ``size``: the size every layer's map is resized to (default:
    the model's input grid: the U-Net's latents, the MM-DiT's patches). ``self_attention_res``: also
    keep a U-Net's self-attention at that layer resolution. ``forwards_per_step``: model forwards per
    denoising step, of which the first is captured (a pipeline that runs its conditional and then its
    unconditional pass as two forwards, as Flux's true CFG does, has 2).
    """

    steps: Steps = None
    guidance: bool = True
    size: tuple[int, int] | None = None
    self_attention_res: int | None = None
    forwards_per_step: int = 1

    def __post_init__(self) -> None:
        if self.forwards_per_step < 1:
            raise ValueError(f"forwards_per_step must be at least 1, got {self.forwards_per_step}")
        _step_set(self.steps)

    @cached_property
    def chosen(self) -> frozenset[int] | None:
        return _step_set(self.steps)


@dataclass
class AttentionStore:
    """Running sums of captured attention under a ``CaptureConfig``, and a record of the steps they came from."""

    config: CaptureConfig = field(default_factory=CaptureConfig)
    step_index: int = -1
    timestep: float | None = None
    steps_used: list[tuple[int, float]] = field(default_factory=list)
    calls: int = 0
    cross_sums: dict[tuple[int, int], torch.Tensor] = field(default_factory=dict)
    cross_counts: dict[tuple[int, int], int] = field(default_factory=dict)
    self_sum: torch.Tensor | None = None
    self_count: int = 0
    peak_bytes: int = 0
    resolve_guidance: Callable[[], bool] | None = None  # asked once, at the model's first forward
    grid: tuple[int, int] = (0, 0)  # the model input's spatial size at the last forward
    _forwards: int = 0
    _first_of_step: bool = False

    @property
    def guidance(self) -> bool:
        return self.config.guidance

    def reconfigure(self, **changes) -> None:
        """Replace fields of the configuration (before the captured steps: the trace learns them from the pipeline)."""
        self.config = replace(self.config, **changes)

    @property
    def active(self) -> bool:
        """Whether the current forward is captured: the first of a chosen step."""
        chosen = self.config.chosen
        return self._first_of_step and (chosen is None or self.step_index in chosen)

    def on_forward(self, grid: tuple[int, int], timestep) -> None:
        """Advance the step counter at a forward of the model, whose input has spatial size ``grid``."""
        if self.resolve_guidance is not None:
            self.reconfigure(guidance=self.resolve_guidance())
            self.resolve_guidance = None
        self.step_index, position = divmod(self._forwards, self.config.forwards_per_step)
        self._first_of_step = position == 0
        self._forwards += 1
        t = torch.as_tensor(timestep).flatten()
        self.timestep = t[0].item() if t.numel() else None
        self.grid = tuple(grid)
        if self.active:
            self.steps_used.append((self.step_index, self.timestep))

    def layer_hw(self, tokens: int) -> tuple[int, int]:
        """Spatial size of a layer whose query has ``tokens`` positions."""
        return _layer_hw(self.grid, tokens)

    def conditional(self, batch: torch.Tensor) -> torch.Tensor:
        """A batch-first tensor -> its conditional half under guidance ([unconditional, conditional]), else itself."""
        if not self.config.guidance:
            return batch
        if len(batch) % 2:
            raise ValueError("guidance=True needs an even batch [unconditional, conditional]")
        return batch[len(batch) // 2:]

    def add_cross(self, probs: torch.Tensor) -> None:
        """Add one layer's text attention (b, heads, N, L) of the kept batch: its token maps (Eq. 3),
        resized to one size and summed per layer resolution."""
        self.calls += 1
        hw = self.layer_hw(probs.shape[2])
        maps = token_maps(probs.flatten(0, 1), probs.shape[1], hw)  # Eq. 3
        size = self.config.size or self.grid
        if hw != tuple(size):
            maps = F.interpolate(maps, size=size, mode="bilinear", align_corners=False)
        if hw in self.cross_sums:
            self.cross_sums[hw].add_(maps)
        else:
            self.cross_sums[hw] = maps
        self.cross_counts[hw] = self.cross_counts.get(hw, 0) + 1
        self._track(maps)

    def add_self(self, probs: torch.Tensor) -> None:
        """Add one layer's self-attention probabilities (b, heads, N, N) of the kept batch."""
        maps = probs.float().mean(1)
        self.self_sum = maps if self.self_sum is None else self.self_sum.add_(maps)
        self.self_count += 1
        self._track(maps)

    def wants_self(self, tokens: int) -> bool:
        r = self.config.self_attention_res
        return r is not None and self.active and self.layer_hw(tokens) == (r, r)

    def _track(self, transient: torch.Tensor) -> None:
        held = self.nbytes + (0 if any(transient is t for t in self.cross_sums.values()) else transient.nbytes)
        self.peak_bytes = max(self.peak_bytes, held)

    @property
    def nbytes(self) -> int:
        held = [*self.cross_sums.values(), *([self.self_sum] if self.self_sum is not None else [])]
        return sum(t.nbytes for t in held)

    @property
    def resolutions(self) -> list[tuple[int, int]]:
        """The layer resolutions captured, largest first."""
        return sorted(self.cross_sums, reverse=True)

    def cross_attention(self, resolution: tuple[int, int] | None = None) -> torch.Tensor:
        """Mean cross-attention over heads, selected steps and the layers of all resolutions
        (or of one ``resolution``), each resized to one size: (batch, tokens, H, W)."""
        if not self.cross_sums:
            raise RuntimeError(
                f"no cross-attention was captured: steps {self.config.steps!r} never ran "
                f"(last step index {self.step_index})"
            )
        if resolution is not None:
            return self.cross_sums[tuple(resolution)] / self.cross_counts[tuple(resolution)]
        return sum(self.cross_sums.values()) / sum(self.cross_counts.values())

    def self_attention(self) -> torch.Tensor:
        """Mean self-attention at ``self_attention_res``: (batch, N, N), rows sum to 1."""
        if self.self_sum is None:
            raise RuntimeError(f"no self-attention at resolution {self.config.self_attention_res} was captured")
        return self.self_sum / self.self_count


class CaptureProcessor:
    """Attention processor of a captured step's forward (``capture_attention`` installs it for those
    alone): a cross-attention layer records its probabilities; a self-attention layer records them at
    the store's ``self_attention_res`` and otherwise defers to the layer's original (fused) processor.
    The capturing path follows diffusers' ``AttnProcessor``.
    """

    def __init__(self, store: AttentionStore, original, cross: bool) -> None:
        self.store, self.original, self.cross = store, original, cross

    def _capturing(self, tokens: int) -> bool:
        return self.cross or self.store.wants_self(tokens)

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None,
                 temb=None, *args, **kwargs):
        tokens = hidden_states.shape[1] if hidden_states.ndim == 3 else math.prod(hidden_states.shape[2:])
        if not self._capturing(tokens):
            return self.original(attn, hidden_states, encoder_hidden_states, attention_mask, temb, *args, **kwargs)
        residual = hidden_states
        if attn.spatial_norm is not None:
            hidden_states = attn.spatial_norm(hidden_states, temb)
        shape = hidden_states.shape
        if hidden_states.ndim == 4:
            hidden_states = hidden_states.flatten(2).transpose(1, 2)
        batch = hidden_states.shape[0]
        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)
        context = hidden_states if encoder_hidden_states is None else encoder_hidden_states
        if encoder_hidden_states is not None and attn.norm_cross:
            context = attn.norm_encoder_hidden_states(context)
        mask = attn.prepare_attention_mask(attention_mask, context.shape[1], batch)
        probs = attention_probs(attn, hidden_states, context, mask)  # Eq. 2
        kept = self.store.conditional(probs.unflatten(0, (-1, attn.heads)))
        (self.store.add_cross if self.cross else self.store.add_self)(kept)
        out = attend(attn, probs, context)  # Eq. 1
        out = attn.to_out[1](attn.to_out[0](out))
        if len(shape) == 4:
            out = out.transpose(1, 2).reshape(shape)
        if attn.residual_connection:
            out = out + residual
        return out / attn.rescale_output_factor


def cross_attention_layers(unet) -> list[str]:
    """Processor names of the U-Net's cross-attention layers."""
    return [name for name in unet.attn_processors if ".attn2." in name]


def _unet_processors(originals: Mapping[str, object], store: AttentionStore) -> dict[str, object]:
    """Every processor of the U-Net, the cross-attention (and, if asked, self-attention) ones capturing."""
    if not any(".attn2." in name for name in originals):
        raise ValueError("this U-Net has no cross-attention (attn2) layers to capture")
    wanted = (".attn2.", ".attn1.") if store.config.self_attention_res else (".attn2.",)
    return {name: CaptureProcessor(store, proc, cross=".attn2." in name) if any(w in name for w in wanted) else proc
            for name, proc in originals.items()}


def _unet_inputs(model, inputs: Mapping[str, object]) -> tuple[tuple[int, int], object]:
    """The U-Net's latent size and timestep."""
    return tuple(inputs["sample"].shape[-2:]), inputs["timestep"]


@dataclass(frozen=True)
class AttentionKind:
    """How one class of denoising model shows its text attention to a capture."""

    name: str
    processors: Callable[[Mapping[str, object], AttentionStore], dict[str, object]]  # originals -> installed
    inputs: Callable[[object, Mapping[str, object]], tuple[tuple[int, int], object] | None]  # (grid, timestep)
    guided: bool  # whether its pipelines batch [unconditional, conditional] under guidance


KINDS: dict[type, AttentionKind] = {
    UNet2DConditionModel: AttentionKind("unet", _unet_processors, _unet_inputs, guided=True),
    SD3Transformer2DModel: AttentionKind("sd3", joint.sd3_processors, joint.sd3_inputs, guided=True),
    FluxTransformer2DModel: AttentionKind("flux", joint.flux_processors, joint.flux_inputs, guided=False),
}


def denoiser(pipe):
    """The pipeline's denoising model: its U-Net, or its (MM-DiT) transformer."""
    model = getattr(pipe, "unet", None)
    model = getattr(pipe, "transformer", None) if model is None else model  # a compiled model has no truth value
    if model is None:
        raise TypeError(f"{type(pipe).__name__} has no U-Net and no transformer to capture attention from; give a "
                        "diffusers pipeline of Stable Diffusion 1.x/2.x/XL, SD3/3.5, Flux.1 or the toy model")
    return model


def attention_kind(model) -> AttentionKind:
    """The attention kind of ``model`` (a ``torch.compile``'d one too)."""
    base = getattr(model, "_orig_mod", model)
    for cls, kind in KINDS.items():
        if isinstance(base, cls):
            return kind
    raise TypeError(f"cannot capture the attention of a {type(base).__name__}: the kit captures a "
                    "UNet2DConditionModel (Stable Diffusion 1.x/2.x/XL, the toy model), an SD3Transformer2DModel "
                    "(SD3/3.5) or a FluxTransformer2DModel (Flux.1)")


@dataclass
class LayerInputs:
    """What entered one cross-attention layer at one denoising step (filled by ``layer_inputs``)."""

    name: str  # the layer's module name in the U-Net
    attn: object  # the diffusers ``Attention`` module
    f: torch.Tensor | None = None  # image features (B, N, C); under guidance B is [unconditional, conditional]
    s: torch.Tensor | None = None  # text embedding (B, L, D)
    hw: tuple[int, int] | None = None  # the layer's spatial size, h * w = N


@contextmanager
def layer_inputs(unet, step: int = 0, layer: str | None = None) -> Iterator[LayerInputs]:
    """Record the inputs of one cross-attention layer (``layer``, a module name; default the first)
    at denoising step ``step`` (one U-Net forward per step) of the sampling run inside the block,
    to call ``attention_probs`` (Eq. 2), ``attend`` (Eq. 1) and ``token_maps`` (Eq. 3) on them."""
    names = [n.removesuffix(".processor") for n in cross_attention_layers(unet)]
    if not names or (layer is not None and layer not in names):
        raise ValueError(f"no cross-attention layer {layer!r} in this U-Net; its layers: {names}")
    seen = LayerInputs(layer or names[0], unet.get_submodule(layer or names[0]))
    state = {"step": -1, "latent_hw": (0, 0)}

    def on_unet(module, args, kwargs):
        state["step"] += 1
        state["latent_hw"] = tuple((args[0] if args else kwargs["sample"]).shape[-2:])

    def on_layer(module, args, kwargs):
        if state["step"] == step and seen.f is None:
            seen.f = (args[0] if args else kwargs["hidden_states"]).detach()
            seen.s = (kwargs.get("encoder_hidden_states") if len(args) < 2 else args[1]).detach()
            seen.hw = _layer_hw(state["latent_hw"], seen.f.shape[1])

    handles = [unet.register_forward_pre_hook(on_unet, with_kwargs=True),
               seen.attn.register_forward_pre_hook(on_layer, with_kwargs=True)]
    try:
        yield seen
    finally:
        for h in handles:
            h.remove()
    if seen.f is None:
        raise RuntimeError(f"step {step} never ran (last step index {state['step']})")


@contextmanager
def capture_attention(
    model,
    steps: Steps = None,
    guidance: bool | None = None,
    size: tuple[int, int] | None = None,
    self_attention_res: int | None = None,
    forwards_per_step: int = 1,
) -> Iterator[AttentionStore]:
    """Capture the text attention of ``model`` (a U-Net, or an SD3 or Flux transformer; compiled or
    not), and optionally a U-Net's self-attention at one resolution; ``guidance`` defaults to whether
    the model's pipelines batch [unconditional, conditional] (see ``CaptureConfig`` for the rest).

    The capturing processors are installed for the captured steps' forwards alone, which run
    eagerly; every other step runs the model as it is, compiled (``torch.compile``) or not, with its
    own processors. Example::

        with capture_attention(unet, steps=50) as store:
            ...  # sampling loop
        maps = store.cross_attention()  # (batch, tokens, H, W)
    """
    kind = attention_kind(model)
    store = AttentionStore(CaptureConfig(steps, kind.guided if guidance is None else guidance, size,
                                         self_attention_res, forwards_per_step))
    originals = model.attn_processors
    capturing = kind.processors(originals, store)
    signature = inspect.signature(getattr(model, "_orig_mod", model).forward)
    captured = ExitStack()  # what a captured forward changed, undone after it

    def before(module, args, kwargs):
        seen = kind.inputs(model, signature.bind(*args, **kwargs).arguments)
        if seen is None:  # not a denoising step's own forward
            return
        store.on_forward(*seen)
        if store.active:  # this forward runs eagerly with the capturing processors
            captured.enter_context(torch.compiler.set_stance("force_eager"))
            model.set_attn_processor(dict(capturing))
            captured.callback(model.set_attn_processor, dict(originals))

    def after(module, args, kwargs, output):
        captured.close()

    handles = [model.register_forward_pre_hook(before, with_kwargs=True),
               model.register_forward_hook(after, with_kwargs=True, always_call=True)]
    try:
        yield store
    finally:
        for h in handles:
            h.remove()
        captured.close()
        model.set_attn_processor(dict(originals))
