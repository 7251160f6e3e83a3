"""SD3/3.5 and Flux.1 shapes, for building MM-DiT pipelines without a download: the real layout with
random weights, or shrunk for tests, around CLIP's tokenizers (``sd``) and a T5 tokenizer built here.

    clip, clip_2 = sd.sdxl_tokenizers(folder)  # SD3's tokenizer and tokenizer_2 (the twin pads with "!")
    pipe = random_sd3(clip, clip_2, t5_tokenizer(), tiny=True)
    pipe.save_pretrained("sd3-tiny")  # loads with StableDiffusion3Pipeline.from_pretrained
"""

from __future__ import annotations

import argparse
import string
import tempfile
from collections.abc import Iterable
from pathlib import Path

import torch
from diffusers import (
    AutoencoderKL,
    FlowMatchEulerDiscreteScheduler,
    FluxPipeline,
    FluxTransformer2DModel,
    SD3Transformer2DModel,
    StableDiffusion3Pipeline,
)
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
from transformers import CLIPTextModel, CLIPTextModelWithProjection, T5Config, T5EncoderModel, T5TokenizerFast

from .classes import CITYSCAPES, VOC
from .prompts import CITYSCAPES_TEMPLATE, IMAGENET_S_TEMPLATE
from .sd import (
    SD14_TEXT_CONFIG,
    SD14_VAE_CONFIG,
    SDXL_TEXT_2_CONFIG,
    TINY_SDXL_TEXT_2_CONFIG,
    TINY_TEXT_CONFIG,
    TINY_VAE_CONFIG,
    clip_text_config,
    clip_tokenizer,
    sdxl_tokenizers,
)

# stabilityai/stable-diffusion-3-medium-diffusers transformer/config.json: 24 joint blocks, 24 heads of 64;
# stable-diffusion-3.5-medium adds RMS norms on q and k and an image-only second attention in blocks 0-12.
SD3_TRANSFORMER_CONFIG = {
    "sample_size": 128, "patch_size": 2, "in_channels": 16, "num_layers": 24, "attention_head_dim": 64,
    "num_attention_heads": 24, "joint_attention_dim": 4096, "caption_projection_dim": 1536,
    "pooled_projection_dim": 2048, "out_channels": 16, "pos_embed_max_size": 192,
}
SD35_CHANGES = {"pos_embed_max_size": 384, "qk_norm": "rms_norm", "dual_attention_layers": tuple(range(13))}
# black-forest-labs/FLUX.1-dev transformer/config.json: 19 double-stream and 38 single-stream blocks, 24 heads of 128.
FLUX_TRANSFORMER_CONFIG = {
    "patch_size": 1, "in_channels": 64, "num_layers": 19, "num_single_layers": 38, "attention_head_dim": 128,
    "num_attention_heads": 24, "joint_attention_dim": 4096, "pooled_projection_dim": 768, "guidance_embeds": True,
    "axes_dims_rope": (16, 56, 56),
}
# Their vae/config.json (SD's shape, 16 latent channels, no quant convs, each its own scale and shift), the
# T5 v1.1 XXL text encoder (text_encoder_3 of SD3, text_encoder_2 of Flux) and scheduler_config.json.
SD3_VAE_CONFIG = dict(SD14_VAE_CONFIG, latent_channels=16, use_quant_conv=False, use_post_quant_conv=False,
                      scaling_factor=1.5305, shift_factor=0.0609, force_upcast=True)
FLUX_VAE_CONFIG = dict(SD3_VAE_CONFIG, scaling_factor=0.3611, shift_factor=0.1159)
T5_XXL_CONFIG = {"d_model": 4096, "d_kv": 64, "d_ff": 10240, "num_layers": 24, "num_heads": 64,
                 "relative_attention_num_buckets": 32, "feed_forward_proj": "gated-gelu", "tie_word_embeddings": False}
SD3_SCHEDULER_CONFIG = {"num_train_timesteps": 1000, "shift": 3.0}
FLUX_SCHEDULER_CONFIG = {"num_train_timesteps": 1000, "shift": 3.0, "use_dynamic_shifting": True,
                         "base_shift": 0.5, "max_shift": 1.15, "base_image_seq_len": 256, "max_image_seq_len": 4096}

# Shrunk for tests: 32x32 images, 4 latent channels at 16x16 (SD3: 2x2 patches; Flux: 2x2 packing), so an
# 8x8 patch grid; text width 32 (two CLIPs of 16 side by side, T5 of 32).
TINY_SD3_TRANSFORMER_CONFIG = dict(
    SD3_TRANSFORMER_CONFIG, sample_size=16, in_channels=4, out_channels=4, num_layers=2, attention_head_dim=8,
    num_attention_heads=2, joint_attention_dim=32, caption_projection_dim=16, pooled_projection_dim=32,
    pos_embed_max_size=16)
TINY_SD35_CHANGES = dict(SD35_CHANGES, pos_embed_max_size=16, dual_attention_layers=(0,))
TINY_FLUX_TRANSFORMER_CONFIG = dict(
    FLUX_TRANSFORMER_CONFIG, in_channels=16, num_layers=2, num_single_layers=2, attention_head_dim=16,
    num_attention_heads=2, joint_attention_dim=32, pooled_projection_dim=16, axes_dims_rope=(4, 6, 6))
TINY_DIT_VAE_CONFIG = dict(TINY_VAE_CONFIG, use_quant_conv=False, use_post_quant_conv=False)
TINY_T5_CONFIG = dict(T5_XXL_CONFIG, d_model=32, d_kv=8, d_ff=32, num_layers=1, num_heads=4,
                      relative_attention_num_buckets=8)

# The T5 tokenizer's words: the class names and synonyms of VOC and Cityscapes, the words of the prompt
# templates and common caption words, each one piece; any other text falls back to sub-word pieces and letters.
CAPTION_WORDS = ("a", "an", "the", "and", "of", "on", "in", "at", "with", "by", "to", "next", "near", "two", "three",
                 "is", "are", "sitting", "standing", "riding", "walking", "parked", "street", "room", "red", "blue",
                 "sks")
T5_WORDS = tuple(dict.fromkeys(
    [*CAPTION_WORDS,
     *(w for t in (IMAGENET_S_TEMPLATE, CITYSCAPES_TEMPLATE) for w in t.replace("}", "} ").split() if "{" not in w),
     *(w for vocab in (VOC, CITYSCAPES) for name in vocab.names[1:] for p in vocab.phrases(name) for w in p.split())]))
T5_SUFFIXES = ("s", "es", "ing", "ed", "er")
T5_CHARACTERS = string.ascii_letters + string.digits + string.punctuation


def t5_tokenizer(words: Iterable[str] = T5_WORDS, max_length: int = 512) -> T5TokenizerFast:
    """A T5 v1.1-style tokenizer built offline: a ``tokenizers`` Unigram model over ``words`` (each one
    piece), suffixes and single characters (as word starts and inside words), so any text maps; the
    Metaspace pre-tokenizer; ``</s>`` appended (the first word is at position 0); T5's special ids
    (<pad> 0, </s> 1, <unk> 2). ``max_length``: SD3's and Flux's T5 tokenizers say 512."""
    pieces = {"<pad>": 0.0, "</s>": 0.0, "<unk>": 0.0, "\u2581": -2.0}  # then the bare "▁", as in T5's vocabulary
    pieces |= {f"\u2581{w}": -5.0 for w in words} | {s: -6.0 for s in T5_SUFFIXES}
    pieces |= {f"\u2581{c}": -9.0 for c in T5_CHARACTERS} | {c: -10.0 for c in T5_CHARACTERS}
    unigram = Tokenizer(models.Unigram(list(pieces.items()), unk_id=2))
    unigram.pre_tokenizer = pre_tokenizers.Metaspace()
    unigram.decoder = decoders.Metaspace()
    unigram.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    return T5TokenizerFast(tokenizer_object=unigram, eos_token="</s>", unk_token="<unk>", pad_token="<pad>",
                           model_max_length=max_length)


def t5_encoder(tokenizer, config: dict, text_layers: int | None = None) -> T5EncoderModel:
    """A T5 encoder of shape ``config`` (``text_layers`` overrides its depth) for ``tokenizer``'s vocabulary."""
    return T5EncoderModel(T5Config(
        vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
        **dict(config, num_layers=text_layers or config["num_layers"])))


def _depth(config: dict, text_layers: int | None) -> dict:
    return dict(config, num_hidden_layers=text_layers or config["num_hidden_layers"])


def random_sd3(tokenizer, tokenizer_2, tokenizer_3, tiny: bool = False, sd35: bool = False,
               transformer: dict | None = None, text_layers: int | None = None,
               seed: int = 0) -> StableDiffusion3Pipeline:
    """A Stable Diffusion 3 medium-shaped pipeline (``sd35``: 3.5 medium's transformer) with random
    weights around CLIP's two tokenizers and a T5 one (``tiny``: the test-sized layout).
    ``transformer`` overrides the transformer's configuration (e.g. fewer blocks), ``text_layers`` the
    depth of the three text encoders. Saved with ``save_pretrained``, it loads like the real one."""
    changes = (TINY_SD35_CHANGES if tiny else SD35_CHANGES) if sd35 else {}
    config = {**(TINY_SD3_TRANSFORMER_CONFIG if tiny else SD3_TRANSFORMER_CONFIG), **changes, **(transformer or {})}
    clip_l = dict(TINY_TEXT_CONFIG, projection_dim=16) if tiny else dict(SD14_TEXT_CONFIG, projection_dim=768)
    clip_g = TINY_SDXL_TEXT_2_CONFIG if tiny else SDXL_TEXT_2_CONFIG
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = SD3Transformer2DModel(**config)
        text = CLIPTextModelWithProjection(clip_text_config(tokenizer, _depth(clip_l, text_layers)))
        text_2 = CLIPTextModelWithProjection(clip_text_config(tokenizer_2, _depth(clip_g, text_layers)))
        text_3 = t5_encoder(tokenizer_3, TINY_T5_CONFIG if tiny else T5_XXL_CONFIG, text_layers)
        vae = AutoencoderKL(**(dict(TINY_DIT_VAE_CONFIG, scaling_factor=1.5305, shift_factor=0.0609)
                               if tiny else SD3_VAE_CONFIG))
    pipe = StableDiffusion3Pipeline(model.eval(), FlowMatchEulerDiscreteScheduler(**SD3_SCHEDULER_CONFIG), vae.eval(),
                                    text.eval(), tokenizer, text_2.eval(), tokenizer_2, text_3.eval(), tokenizer_3)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def random_flux(tokenizer, tokenizer_2, tiny: bool = False, transformer: dict | None = None,
                text_layers: int | None = None, seed: int = 0) -> FluxPipeline:
    """A FLUX.1-dev-shaped pipeline (guidance-distilled: the guidance scale is a transformer input) with
    random weights around CLIP's tokenizer and a T5 one (``tiny``: the test-sized layout, whose images
    are 32x32: call it with ``height=32, width=32``). ``transformer`` and ``text_layers`` as in ``random_sd3``."""
    config = {**(TINY_FLUX_TRANSFORMER_CONFIG if tiny else FLUX_TRANSFORMER_CONFIG), **(transformer or {})}
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = FluxTransformer2DModel(**config)
        text = CLIPTextModel(clip_text_config(tokenizer, _depth(TINY_TEXT_CONFIG if tiny else SD14_TEXT_CONFIG,
                                                                text_layers)))
        text_2 = t5_encoder(tokenizer_2, TINY_T5_CONFIG if tiny else T5_XXL_CONFIG, text_layers)
        vae = AutoencoderKL(**(dict(TINY_DIT_VAE_CONFIG, scaling_factor=0.3611, shift_factor=0.1159)
                               if tiny else FLUX_VAE_CONFIG))
    pipe = FluxPipeline(FlowMatchEulerDiscreteScheduler(**FLUX_SCHEDULER_CONFIG), vae.eval(), text.eval(), tokenizer,
                        text_2.eval(), tokenizer_2, model.eval())
    pipe.set_progress_bar_config(disable=True)
    return pipe


def main(argv: list[str] | None = None) -> None:
    """``python -m a2m_utils.dit OUT {sd3,sd35,flux} [--tiny]``: save an SD3 medium-, SD3.5 medium- or
    FLUX.1-dev-shaped pipeline with random weights (``--tiny``: the test-sized layout, 32x32 images),
    CLIP's tokenizers and a T5 tokenizer built offline, loadable with ``from_pretrained`` like the real one."""
    p = argparse.ArgumentParser(description=main.__doc__.split(":")[0])
    p.add_argument("out", type=Path)
    p.add_argument("model", choices=("sd3", "sd35", "flux"))
    p.add_argument("--tiny", action="store_true")
    a = p.parse_args(argv)
    if a.out.exists() and any(a.out.iterdir()):
        raise SystemExit(f"{a.out} is not empty; choose a new folder")
    with tempfile.TemporaryDirectory() as files:
        if a.model == "flux":
            pipe = random_flux(clip_tokenizer(files), t5_tokenizer(), tiny=a.tiny)
        else:
            pipe = random_sd3(*sdxl_tokenizers(files), t5_tokenizer(), tiny=a.tiny, sd35=a.model == "sd35")
        pipe.save_pretrained(a.out)
    print(f"saved a random {'tiny ' if a.tiny else ''}{a.model} pipeline to {a.out}")


if __name__ == "__main__":
    main()
