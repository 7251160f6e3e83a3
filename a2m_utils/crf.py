"""Dense CRF post-processing (Kraehenbuehl and Koltun 2011) through pydensecrf."""

from __future__ import annotations

import numpy as np


def dense_crf(
    image: np.ndarray,
    probs: np.ndarray,
    iterations: int = 5,
    gauss_sxy: float = 3,
    gauss_compat: float = 3,
    bilateral_sxy: float = 80,
    bilateral_srgb: float = 13,
    bilateral_compat: float = 10,
) -> np.ndarray:
    """MAP labels (H, W) of a fully connected CRF on ``image`` (H, W, 3) uint8 with
    unary -log(probs), probs (K, H, W) summing to 1 over K. Defaults: pydensecrf's examples."""
    if image.shape[:2] != probs.shape[1:] or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"image {image.shape} and probabilities {probs.shape} do not match as (H, W, 3) / (K, H, W)")
    try:  # imported here: the compiled extension is needed only by this method, not by capture
        import pydensecrf.densecrf as dcrf
        from pydensecrf.utils import unary_from_softmax
    except ImportError as err:
        raise ImportError("the dense CRF needs pydensecrf: pip install pydensecrf2") from err
    k, h, w = probs.shape
    crf = dcrf.DenseCRF2D(w, h, k)
    crf.setUnaryEnergy(np.ascontiguousarray(unary_from_softmax(probs.astype(np.float32))))
    crf.addPairwiseGaussian(sxy=gauss_sxy, compat=gauss_compat)
    crf.addPairwiseBilateral(sxy=bilateral_sxy, srgb=bilateral_srgb,
                             rgbim=np.ascontiguousarray(image.astype(np.uint8)), compat=bilateral_compat)
    q = np.asarray(crf.inference(iterations), dtype=np.float32).reshape(k, h, w)
    return q.argmax(0)
