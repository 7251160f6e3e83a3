"""The toy world's text-to-image model as a diffusers pipeline: a pixel-space U-Net with
cross-attention and a small CLIP text encoder over a word-level tokenizer, no VAE.

    pipe = ToyPipeline.from_pretrained("models/toy-t2i")
    image = pipe("a red circle and a blue square", num_inference_steps=20, guidance_scale=2.0).images[0]

It keeps diffusers' conventions (``encode_prompt``, ``do_classifier_free_guidance``, a list of
generators draws each image's noise from its own, ``output_type``, ``load_lora_weights``), so
the kit's capture, dataset writer, inversion and LoRA treat it like Stable Diffusion.
"""

from __future__ import annotations

from pathlib import Path

import torch
from diffusers import DDPMScheduler, DiffusionPipeline, ImagePipelineOutput, UNet2DConditionModel
from diffusers.image_processor import VaeImageProcessor
from diffusers.loaders import StableDiffusionLoraLoaderMixin
from diffusers.utils.torch_utils import randn_tensor
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
from transformers import (
    CLIPTextConfig,
    CLIPTextModel,
    PreTrainedModel,  # noqa: F401  diffusers finds a custom component's loader base here, by name
    PreTrainedTokenizerFast,
)

from ..guidance import guide
from . import world

IMAGE_SIZE = 32
MAX_TOKENS = 24
SPECIALS = ("[PAD]", "[BOS]", "[EOS]", "[UNK]")
TOY_DEFAULT = Path(__file__).resolve().parents[2] / "models" / "toy-t2i"


def local_causal_mask(length: int, window: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Additive attention mask (1, 1, L, L): token i sees tokens i - window + 1 .. i."""
    i = torch.arange(length)
    seen = (i[None, :] <= i[:, None]) & (i[:, None] - i[None, :] < window)
    return torch.zeros(length, length, dtype=dtype).masked_fill(~seen, torch.finfo(dtype).min)[None, None]


class ToyTextEncoder(CLIPTextModel):
    """A CLIP text encoder whose tokens see only the ``config.attention_window`` tokens up to
    themselves: "circle" in "a red circle and a blue square" carries its colour, but no token
    carries the whole caption, so the U-Net has to attend to each object's own words where it
    draws that object. The mask is built here, so every encode path gives the same embeddings."""

    def forward(self, input_ids: torch.Tensor | None = None, attention_mask: torch.Tensor | None = None,
                **kwargs):
        window = getattr(self.config, "attention_window", None)
        if window is not None and attention_mask is None:
            attention_mask = local_causal_mask(input_ids.shape[1], window, self.dtype).to(input_ids.device)
        return super().forward(input_ids=input_ids, attention_mask=attention_mask, **kwargs)


class ToyPipeline(DiffusionPipeline, StableDiffusionLoraLoaderMixin):
    """Text-to-image in pixel space with classifier-free guidance (on when ``guidance_scale > 1``)."""

    model_cpu_offload_seq = "text_encoder->unet"

    def __init__(self, unet: UNet2DConditionModel, text_encoder: ToyTextEncoder, tokenizer: PreTrainedTokenizerFast,
                 scheduler: DDPMScheduler) -> None:
        super().__init__()
        self.register_modules(unet=unet, text_encoder=text_encoder, tokenizer=tokenizer, scheduler=scheduler)
        self.image_processor = VaeImageProcessor(vae_scale_factor=1, do_resize=False)
        self._guidance_scale = 1.0

    @property
    def guidance_scale(self) -> float:
        return self._guidance_scale

    @property
    def do_classifier_free_guidance(self) -> bool:
        return self._guidance_scale > 1

    def _embed(self, texts: list[str], device: torch.device) -> torch.Tensor:
        ids = self.tokenizer(texts, padding="max_length", truncation=True, max_length=self.tokenizer.model_max_length,
                             return_tensors="pt").input_ids
        return self.text_encoder(ids.to(device))[0]

    def encode_prompt(self, prompt: str | list[str], device: torch.device, num_images_per_prompt: int = 1,
                      do_classifier_free_guidance: bool = True, negative_prompt: str | list[str] | None = None,
                      prompt_embeds: torch.Tensor | None = None, negative_prompt_embeds: torch.Tensor | None = None,
                      ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(prompt embeddings, negative ones or None), as Stable Diffusion's ``encode_prompt``."""
        if prompt_embeds is None:
            prompt_embeds = self._embed([prompt] if isinstance(prompt, str) else list(prompt), device)
        n = len(prompt_embeds)
        if do_classifier_free_guidance and negative_prompt_embeds is None:
            negative = [""] * n if negative_prompt is None else negative_prompt
            negative_prompt_embeds = self._embed([negative] * n if isinstance(negative, str) else list(negative), device)
        repeat = (lambda e: None if e is None else e.repeat_interleave(num_images_per_prompt, 0))
        return repeat(prompt_embeds), repeat(negative_prompt_embeds)

    @torch.no_grad()
    def __call__(self, prompt: str | list[str] | None = None, num_inference_steps: int = 50,
                 guidance_scale: float = 7.5, negative_prompt: str | list[str] | None = None,
                 num_images_per_prompt: int = 1, generator: torch.Generator | list[torch.Generator] | None = None,
                 latents: torch.Tensor | None = None, prompt_embeds: torch.Tensor | None = None,
                 negative_prompt_embeds: torch.Tensor | None = None, output_type: str = "pil",
                 return_dict: bool = True, callback_on_step_end=None,
                 callback_on_step_end_tensor_inputs: tuple[str, ...] = ("latents",)):
        self._guidance_scale = guidance_scale
        device = self._execution_device
        cond, uncond = self.encode_prompt(prompt, device, num_images_per_prompt, self.do_classifier_free_guidance,
                                          negative_prompt, prompt_embeds, negative_prompt_embeds)
        context = torch.cat([uncond, cond]) if self.do_classifier_free_guidance else cond
        context = context.to(self.unet.dtype)
        self.scheduler.set_timesteps(num_inference_steps, device=device)
        size = self.unet.config.sample_size
        shape = (len(cond), self.unet.config.in_channels, size, size)
        if latents is None:
            latents = randn_tensor(shape, generator=generator, device=device, dtype=torch.float32)
        latents = latents * self.scheduler.init_noise_sigma
        for i, t in enumerate(self.progress_bar(self.scheduler.timesteps)):
            x = torch.cat([latents] * 2) if self.do_classifier_free_guidance else latents
            x = self.scheduler.scale_model_input(x, t).to(self.unet.dtype)
            eps = self.unet(x, t, context).sample.float()
            if self.do_classifier_free_guidance:
                eps = guide(*eps.chunk(2), guidance_scale)
            latents = self.scheduler.step(eps, t, latents, generator=generator).prev_sample
            if callback_on_step_end is not None:
                local = {"latents": latents}
                latents = callback_on_step_end(self, i, t, {k: local[k] for k in callback_on_step_end_tensor_inputs}
                                               ).pop("latents", latents)
        image = self.image_processor.postprocess(latents, output_type=output_type)
        self.maybe_free_model_hooks()
        return ImagePipelineOutput(images=image) if return_dict else (image,)


def build_tokenizer(words: list[str] | None = None) -> PreTrainedTokenizerFast:
    """Word-level tokenizer over the toy vocabulary; adds [BOS] ... [EOS] like CLIP's."""
    vocab = {w: i for i, w in enumerate([*SPECIALS, *(words or world.vocabulary())])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation()])
    tok.post_processor = processors.TemplateProcessing(
        single="[BOS] $A [EOS]", special_tokens=[("[BOS]", vocab["[BOS]"]), ("[EOS]", vocab["[EOS]"])]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="[BOS]", eos_token="[EOS]", pad_token="[PAD]",
        unk_token="[UNK]", model_max_length=MAX_TOKENS,
    )


def build_text_encoder(vocab_size: int, width: int = 64, layers: int = 2, window: int | None = None) -> ToyTextEncoder:
    """A small CLIP text encoder; ``window``: each token sees itself and the ``window - 1`` before it."""
    config = CLIPTextConfig(attention_window=window,
        vocab_size=vocab_size, hidden_size=width, intermediate_size=2 * width, num_hidden_layers=layers,
        num_attention_heads=2, max_position_embeddings=MAX_TOKENS, projection_dim=width,
        pad_token_id=0, bos_token_id=1, eos_token_id=2,
    )
    return ToyTextEncoder(config)


def build_unet(channels: tuple[int, ...] = (32, 64, 64), context_dim: int = 64) -> UNet2DConditionModel:
    """Cross-attention at 16x16 and 8x8 (SD's pyramid in miniature; none at 32x32, where
    self-attention would cost 2.5x the training time on CPU)."""
    return UNet2DConditionModel(
        sample_size=IMAGE_SIZE, in_channels=3, out_channels=3, layers_per_block=1,
        block_out_channels=channels,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        mid_block_type="UNetMidBlock2DCrossAttn",
        cross_attention_dim=context_dim, attention_head_dim=2, norm_num_groups=8,
    )


def build_scheduler() -> DDPMScheduler:
    return DDPMScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2", clip_sample=True)


def new_toy(seed: int = 0, text_layers: int = 2, text_window: int | None = None) -> ToyPipeline:
    """A randomly initialised toy pipeline (seeded; the global random state is left as it was)."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        tokenizer = build_tokenizer()
        return ToyPipeline(build_unet(), build_text_encoder(len(tokenizer), layers=text_layers, window=text_window),
                           tokenizer, build_scheduler())


def load_toy(path: str | Path = TOY_DEFAULT) -> ToyPipeline:
    """The toy pipeline saved at ``path`` (default: the committed ``models/toy-t2i``)."""
    path = Path(path)
    if not (path / "model_index.json").is_file():
        raise FileNotFoundError(f"{path} is not a toy pipeline folder (no model_index.json); restore it with "
                                "git checkout or retrain it (notebook 00)")
    pipe = ToyPipeline.from_pretrained(path)
    pipe.set_progress_bar_config(disable=True)
    return pipe
