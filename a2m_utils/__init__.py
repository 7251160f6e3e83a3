"""attn2mask kit: cross-attention of a text-to-image diffusion model as segmentation pseudo-masks.

    import a2m_utils as a2m
    with a2m.trace(pipe, steps=50) as t:
        out = pipe("a dog and a cat on a sofa", num_inference_steps=100, generator=g)
    pm = t.pseudo_masks(classes=a2m.VOC)

Importing the package loads none of its modules: each name below loads its module on first use
(``lazy_loader``), so a command line or a segmenter worker that needs part of the kit never pays for
diffusers or segmentation-models-pytorch.
"""

import lazy_loader

__version__ = "0.2.0"

__getattr__, __dir__, __all__ = lazy_loader.attach(__name__, submod_attrs={
    "classes": ["CITYSCAPES", "VOC", "ClassVocab"],
    "fast": ["fast"],
    "masks": ["PseudoMask"],
    "registry": ["load_pipeline"],
    "tokens": ["ClassWordLostError", "NoClassInPromptError"],
    "trace": ["Trace", "TraceError", "generate", "trace"],
})
