"""attn2mask kit: cross-attention of a text-to-image diffusion model as segmentation pseudo-masks.

    import a2m_utils as a2m
    with a2m.trace(pipe, steps=50) as t:
        out = pipe("a dog and a cat on a sofa", num_inference_steps=100, generator=g)
    pm = t.pseudo_masks(classes=a2m.VOC)
"""

__version__ = "0.2.0"

from .classes import CITYSCAPES, VOC, ClassVocab
from .fast import fast
from .masks import PseudoMask
from .registry import load_pipeline
from .tokens import ClassWordLostError, NoClassInPromptError
from .trace import Trace, TraceError, generate, trace

__all__ = ["CITYSCAPES", "VOC", "ClassVocab", "ClassWordLostError", "NoClassInPromptError", "PseudoMask", "Trace", "TraceError",
           "fast", "generate", "load_pipeline", "trace"]
