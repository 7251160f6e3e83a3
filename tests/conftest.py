import numpy as np
import pytest
import torch

from a2m_utils.sd import TINY_SD_UNET_CONFIG, sd_unet
from a2m_utils.toymodel import build_unet


@pytest.fixture(params=["toy", "sd"])
def unet(request):
    """A tiny U-Net of the toy layout or of Stable Diffusion 1.x's layout, random weights."""
    torch.manual_seed(0)
    if request.param == "toy":
        return build_unet(channels=(8, 16, 16), context_dim=16).eval()
    return sd_unet(TINY_SD_UNET_CONFIG).eval()


@pytest.fixture
def rng():
    return np.random.default_rng(0)
