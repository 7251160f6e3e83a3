"""a2m_utils.fast: faster kernels, the same model; the captured maps and images do not change."""

import numpy as np
import pytest
import torch
from conftest import tiny_sd, tiny_sdxl

import a2m_utils as a2m
from a2m_utils import make_dataset
from a2m_utils.fast import fast
from a2m_utils.make_dataset import main

PROMPTS = ["a photo of a dog and a cat", "a cat next to a potted plant"]


def traced(pipe) -> tuple[np.ndarray, np.ndarray]:
    with a2m.trace(pipe, steps=2) as t:
        pipe(PROMPTS, num_inference_steps=4, output_type="pt",
             generator=[torch.Generator().manual_seed(i) for i in range(len(PROMPTS))])
    return t.attention(), t.images


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    return traced(tiny_sd(tmp_path_factory.mktemp("tok")))


@pytest.mark.parametrize("build", [tiny_sd, tiny_sdxl], ids=["sd", "sdxl"])
def test_layout_and_fused_projections_keep_maps_and_images(build, tmp_path):
    reference = traced(build(tmp_path / "plain"))
    pipe = fast(build(tmp_path / "fast"), compile=False)
    assert pipe.unet.conv_in.weight.is_contiguous(memory_format=torch.channels_last)
    assert all(type(p).__name__ == "FusedAttnProcessor2_0" for p in pipe.unet.attn_processors.values())
    maps, images = traced(pipe)
    np.testing.assert_allclose(maps, reference[0], atol=1e-6)
    assert np.abs(images.astype(int) - reference[1]).max() <= 1


@pytest.mark.slow
def test_compiled_pipeline_traces_like_the_eager_one_without_recompiling(tmp_path, reference):
    pipe = fast(tiny_sd(tmp_path))
    traced(pipe)  # compiles
    with torch._dynamo.config.patch(error_on_recompile=True):
        maps, images = traced(pipe)
    torch._dynamo.reset()
    np.testing.assert_allclose(maps, reference[0], atol=1e-6)
    assert np.abs(images.astype(int) - reference[1]).max() <= 1


def test_make_dataset_fast_applies_the_levers_to_its_pipeline(tmp_path, monkeypatch, capsys):
    seen = []
    monkeypatch.setattr(make_dataset, "fast", lambda pipe: seen.append(pipe) or fast(pipe, compile=False))
    main(["--out", str(tmp_path / "d"), "--n", "2", "--steps", "2", "--batch-size", "2", "--threads", "1", "--fast"])
    assert len(seen) == 1 and seen[0].unet.conv_in.weight.is_contiguous(memory_format=torch.channels_last)
    assert capsys.readouterr().out.startswith("2 samples generated")
