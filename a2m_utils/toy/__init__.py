"""The toy world: a procedural world of coloured shapes with exact labels, and the kit's own small
text-to-image pipeline trained on it (``models/toy-t2i``). A plugin of the core: importing it
registers its pipeline class, vocabulary and prompt sets (``a2m_utils.registry``)."""

from functools import partial

from .. import classes, registry, segmentation
from ..dataset import Settings
from . import encoder, sets
from .oracle import load_or_train_oracle
from .pipeline import TOY_DEFAULT, ToyPipeline, ToyTextEncoder, load_toy
from .world import TOY, make_sample, toy_prompts, toy_template_prompts

registry.PIPELINES["ToyPipeline"] = ToyPipeline
registry.VOCABS["toy"] = TOY
# The toy preset, chosen on development seeds (scripts/toy_preset_sweep.py, runs/toy-preset-sweep.jsonl): DDIM 20
# steps, guidance 2, maps averaged over all steps. The toy model's min-max normalised maps are wider than Stable
# Diffusion's, so beta 0.2 labels much background as object and beta 0 scores best; r = 0.6 keeps the paper's
# unreliable band of Eq. 6 around the background boundary (beta 0.2, r 0.5: 0.3 < max A_c < 0.5 around 0.4; at beta 0
# the boundary is 0.5 and r 0.5 would leave no band: max(A_0, max A_c) >= 0.5). Sampling in bf16 autocast takes half
# the time on a CPU with AVX512-BF16, and its pseudo-masks score as well against the oracle (128 development
# prompts: fp32 0.653, bf16 0.664 mIoU; runs/EXPERIMENTS.md). 14 DDIM steps give pseudo-masks as good as 20 in 0.7x
# the time (256 development prompts against the oracle: 20 steps 0.682, 16 0.686, 14 0.685, 12 0.671, 10 0.660;
# runs/speed/sampler_steps.py).
registry.PRESETS["toy"] = registry.Preset(str(TOY_DEFAULT), "DDIMScheduler", Settings(
    vocab="toy", num_steps=14, guidance_scale=2.0, capture_steps=None, beta=0.0, r=0.6, batch_size=16,
    self_attention_res=16, precision="bf16"))
registry.PROMPT_SETS["toy"] = ("toy", lambda a: toy_prompts(a.n, a.seed, domain=a.domain))
registry.PROMPT_SETS["toy-template"] = ("toy", lambda a: toy_template_prompts(a.n, a.seeds_per_prompt, a.seed))
classes.LABEL_SPACES["toy"] = TOY
registry.ORACLES["toy"] = load_or_train_oracle
# The toy segmenter: a small U-Net whose encoder was pretrained on rendered scenes (the toy world's ImageNet);
# "toy-scratch": the same network from random weights.
registry.SEGMENTERS["toy"] = {**segmentation.TOY, "encoder_weights": str(encoder.WEIGHTS)}
registry.SEGMENTERS["toy-scratch"] = segmentation.TOY
registry.DATASETS.update({name: ("toy", partial(sets.voc_folder, name)) for name in sets.SETS})

__all__ = ["TOY", "TOY_DEFAULT", "ToyPipeline", "ToyTextEncoder", "load_toy", "make_sample", "toy_prompts",
           "toy_template_prompts"]
