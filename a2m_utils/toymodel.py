"""The toy world's text-to-image model: a pixel-space diffusers U-Net with cross-attention
and a small CLIP text encoder over a word-level tokenizer. Saved like a diffusers pipeline
(``unet/``, ``text_encoder/``, ``tokenizer/``, ``scheduler/``: config + safetensors) by
``Backend.save`` and loaded by ``backends.load_toy``."""

from __future__ import annotations

import torch
from diffusers import DDPMScheduler, UNet2DConditionModel
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
from transformers import CLIPTextConfig, CLIPTextModel, PreTrainedTokenizerFast

from . import toyworld
from .backends import Backend

IMAGE_SIZE = 32
MAX_TOKENS = 24
SPECIALS = ("[PAD]", "[BOS]", "[EOS]", "[UNK]")


def build_tokenizer(words: list[str] | None = None) -> PreTrainedTokenizerFast:
    """Word-level tokenizer over the toy vocabulary; adds [BOS] ... [EOS] like CLIP's."""
    vocab = {w: i for i, w in enumerate([*SPECIALS, *(words or toyworld.vocabulary())])}
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


def build_text_encoder(vocab_size: int, width: int = 64, layers: int = 2, window: int | None = None) -> CLIPTextModel:
    """A small CLIP text encoder. With ``window`` each token attends only to itself and the
    ``window - 1`` tokens before it (``Backend.encode`` builds the mask from the config): "circle" in
    "a red circle and a blue square" carries its colour, but no token carries the whole caption,
    so the U-Net cannot read the scene from one summary token and has to attend to each object's
    own words where it draws that object."""
    config = CLIPTextConfig(attention_window=window,
        vocab_size=vocab_size, hidden_size=width, intermediate_size=2 * width, num_hidden_layers=layers,
        num_attention_heads=2, max_position_embeddings=MAX_TOKENS, projection_dim=width,
        pad_token_id=0, bos_token_id=1, eos_token_id=2,
    )
    return CLIPTextModel(config)


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


def new_toy(seed: int = 0, text_layers: int = 2, text_window: int | None = None) -> Backend:
    """A randomly initialised toy model (seeded)."""
    torch.manual_seed(seed)
    tokenizer = build_tokenizer()
    return Backend(build_unet(), build_text_encoder(len(tokenizer), layers=text_layers, window=text_window),
                   tokenizer, build_scheduler(), name="toy")
