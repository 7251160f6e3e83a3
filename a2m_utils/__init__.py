"""attn2mask kit: cross-attention of a text-to-image diffusion model as segmentation pseudo-masks."""

__version__ = "0.1.0"
