"""The toy world: a procedural world of coloured shapes with exact labels, and the kit's own small
text-to-image pipeline trained on it (``models/toy-t2i``). A plugin of the core: importing it
registers its pipeline class, vocabulary and prompt sets (``a2m_utils.registry``)."""

from dataclasses import replace
from functools import partial

from .. import classes, registry, seg_data, segmentation
from ..dataset import Settings
from . import encoder, sets
from .oracle import load_or_train_oracle
from .pipeline import TOY_DEFAULT, ToyPipeline, ToyTextEncoder, load_toy
from .world import TOY, make_sample, toy_prompts, toy_template_prompts

registry.PIPELINES["ToyPipeline"] = ToyPipeline
registry.VOCABS["toy"] = TOY
# The toy preset, chosen on development seeds (benchmarks/toy_preset.py; docs/experiments.md): DDIM 20
# steps, guidance 2, maps averaged over all steps. The toy model's min-max normalised maps are wider than Stable
# Diffusion's, so beta 0.2 labels much background as object and beta 0 scores best; r = 0.6 keeps the paper's
# unreliable band of Eq. 6 around the background boundary (beta 0.2, r 0.5: 0.3 < max A_c < 0.5 around 0.4; at beta 0
# the boundary is 0.5 and r 0.5 would leave no band: max(A_0, max A_c) >= 0.5). Sampling in bf16 autocast takes half
# the time on a CPU with AVX512-BF16, and its pseudo-masks score as well against the oracle (128 development
# prompts: fp32 0.653, bf16 0.664 mIoU; docs/experiments.md). 14 DDIM steps give pseudo-masks as good as 20 in 0.7x
# the time (256 development prompts against the oracle: 20 steps 0.682, 16 0.686, 14 0.685, 12 0.671, 10 0.660;
# benchmarks/sampler_steps.py).
registry.PRESETS["toy"] = registry.Preset(str(TOY_DEFAULT), "DDIMScheduler", Settings(
    vocab="toy", num_steps=14, guidance_scale=2.0, capture_steps=None, beta=0.0, r=0.6, batch_size=16,
    self_attention_res=16, precision="bf16"))
registry.PROMPT_SETS["toy"] = ("toy", lambda n, seed, domain="source", **_: toy_prompts(n, seed, domain=domain))
registry.PROMPT_SETS["toy-template"] = ("toy", lambda n, seeds_per_prompt=1, seed=0, **_: toy_template_prompts(
    n, seeds_per_prompt, seed))
classes.LABEL_SPACES["toy"] = TOY
registry.ORACLES["toy"] = load_or_train_oracle
# The toy segmenter: a small U-Net whose encoder was pretrained on rendered scenes (the toy world's ImageNet);
# "toy-scratch": the same network from random weights.
registry.SEGMENTERS["toy"] = {**segmentation.TOY, "encoder_weights": str(encoder.WEIGHTS)}
registry.SEGMENTERS["toy-scratch"] = segmentation.TOY
registry.DATASETS.update({  # VOC-layout folders in the toy label space, rendered on first use
    name: replace(seg_data.KINDS["voc"], name=name, space="toy", folder=partial(sets.voc_folder, name))
    for name in sets.SETS})

__all__ = ["TOY", "TOY_DEFAULT", "ToyPipeline", "ToyTextEncoder", "load_toy", "make_sample", "toy_prompts",
           "toy_template_prompts"]
