import subprocess
import sys

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from a2m_utils import beco, segmentation
from a2m_utils.study.experiments import seg_config, size_arms, table5_conclusions
from a2m_utils.study.segmenters import SegConfig, fit, fit_all, training_key


def test_table5_conclusions_compare_the_refinement_with_the_toy_preset():
    got = {"threshold 64": 0.30, "threshold 128": 0.35, "otsu": 0.33, "dcrf beta 0": 0.52, "dcrf beta 0.2": 0.36,
           "self-attention refinement": 0.42}
    lines = table5_conclusions([{"post_processing": k, "segmenter_mIoU": v} for k, v in got.items()], 0.0)
    assert "best of the paper's variants is dcrf beta 0 (0.520): not reproduced" in lines[0]
    assert lines[1].endswith("Here: -16.0 points.")
    assert "0.420 vs dcrf beta 0 (the preset's) 0.520: it does not beat it" in lines[-1]


def _toy_arrays(n: int = 8, seed: int = 0):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
    labels = (images[..., 0] > 127).astype(np.uint8)
    return images, labels, np.ones_like(labels, dtype=bool)


@pytest.mark.parametrize("method", ["supervised", "beco"])
def test_a_cached_training_loads_instead_of_training_again(method, tmp_path, monkeypatch):
    steps_run = []
    real_run_steps = segmentation.run_steps

    def counting(train_step, *args, **kwargs):
        return real_run_steps(lambda step: steps_run.append(step) or train_step(step), *args, **kwargs)

    monkeypatch.setattr(segmentation, "run_steps", counting)
    monkeypatch.setattr(beco, "run_steps", counting)
    data, config = _toy_arrays(), SegConfig(steps=4, batch_size=4)
    first = fit(method, data, 2, seed=0, config=config, cache=tmp_path)
    assert steps_run == [0, 1, 2, 3] and len(list(tmp_path.glob("*.pt"))) == 1
    again = fit(method, data, 2, seed=0, config=config, cache=tmp_path)
    assert steps_run == [0, 1, 2, 3]  # loaded, not trained
    np.testing.assert_array_equal(first(data[0]), again(data[0]))


def test_other_data_seed_or_settings_are_another_training(tmp_path):
    data, config = _toy_arrays(), SegConfig(steps=1, batch_size=4)
    keys = {training_key("supervised", data, 2, 0, config, "cpu"),
            training_key("supervised", _toy_arrays(seed=1), 2, 0, config, "cpu"),
            training_key("supervised", data, 2, 1, config, "cpu"),
            training_key("supervised", data, 3, 0, config, "cpu"),
            training_key("supervised", data, 2, 0, SegConfig(steps=1, batch_size=4, lr=1e-3), "cpu"),
            training_key("beco", data, 2, 0, config, "cpu")}
    assert len(keys) == 6
    unreliable = (*data[:2], np.zeros_like(data[2]))  # reliability matters to BECO only
    assert training_key("supervised", unreliable, 2, 0, config, "cpu") in keys
    assert training_key("beco", unreliable, 2, 0, config, "cpu") not in keys


def test_beco_trains_its_own_length_and_only_its_key_depends_on_it(tmp_path, monkeypatch):
    steps_run = []
    real_run_steps = beco.run_steps
    monkeypatch.setattr(beco, "run_steps", lambda train_step, steps, *a: steps_run.append(steps) or
                        real_run_steps(train_step, steps, *a))
    data, config = _toy_arrays(), SegConfig(steps=2, batch_size=4)
    longer = SegConfig(steps=2, batch_size=4, beco_steps=3)
    fit("beco", data, 2, config=longer, cache=tmp_path)
    assert steps_run == [3] and longer.steps_of("supervised") == 2
    assert training_key("supervised", data, 2, 0, longer, "cpu") == training_key("supervised", data, 2, 0, config, "cpu")
    assert training_key("beco", data, 2, 0, longer, "cpu") != training_key("beco", data, 2, 0, config, "cpu")
    assert training_key("beco", data, 2, 0, SegConfig(steps=3, batch_size=4), "cpu") == \
        training_key("beco", data, 2, 0, longer, "cpu")  # the same training, however its length is given


def test_an_interrupted_training_resumes_to_the_same_segmenter(tmp_path, monkeypatch):
    data, config = _toy_arrays(), SegConfig(steps=6, batch_size=4)
    straight = fit("supervised", data, 2, config=config, cache=None)
    real_run_steps = segmentation.run_steps

    def interrupted(train_step, steps, parts, config_, ckpt, ckpt_every, stop_after, *rest):
        real_run_steps(train_step, steps, parts, config_, ckpt, 1, 3, *rest)  # stops after step 3
        raise KeyboardInterrupt

    monkeypatch.setattr(segmentation, "run_steps", interrupted)
    with pytest.raises(KeyboardInterrupt):
        fit("supervised", data, 2, config=config, cache=tmp_path)
    monkeypatch.setattr(segmentation, "run_steps", real_run_steps)
    resumed = fit("supervised", data, 2, config=config, cache=tmp_path)
    np.testing.assert_array_equal(straight(data[0]), resumed(data[0]))


def test_an_unknown_training_method_is_named():
    with pytest.raises(ValueError, match="unknown training method 'cotrain'"):
        fit("cotrain", _toy_arrays(), 2, cache=None)


def test_fit_all_trains_in_workers_what_fit_trains_alone(tmp_path):
    data, config = _toy_arrays(), SegConfig(steps=3, batch_size=4)
    jobs = {"a": ("supervised", data, 0), "b": ("supervised", data, 1), "c": ("beco", data, 0)}
    threads = torch.get_num_threads()
    together = fit_all(jobs, 2, config, cache=tmp_path, workers=2)
    assert len(list(tmp_path.glob("*.pt"))) == 3 and torch.get_num_threads() == threads
    for name, (method, d, seed) in jobs.items():  # one thread each way: the same segmenters
        alone = fit(method, d, 2, seed, config, cache=None)
        np.testing.assert_array_equal(together[name](data[0]), alone(data[0]))


def test_a_local_encoder_is_keyed_by_its_contents_not_its_path(tmp_path):
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        state = segmentation.build(2, seed=seed, **segmentation.TOY).encoder.state_dict()
        save_file({k: v.contiguous() for k, v in state.items()}, tmp_path / f"{name}.safetensors")
    key = lambda name: training_key("supervised", _toy_arrays(), 2, 0, SegConfig(steps=1, arch=tuple(
        {**segmentation.TOY, "encoder_weights": str(tmp_path / f"{name}.safetensors")}.items())), "cpu")
    assert key("a") == key("b") != key("c")


def test_an_unknown_segmenter_is_named():
    with pytest.raises(ValueError, match="unknown segmenter 'unet'; expected one of"):
        seg_config("unet", 10, 4, 1e-3, "adam", False)


def test_table2_trains_beco_at_its_own_sizes_and_only_beside_plain_training():
    assert size_arms([50, 100, 500], [100, 500]) == [
        ("attn2mask", "supervised", 50), ("attn2mask", "supervised", 100), ("attn2mask", "supervised", 500),
        ("attn2mask+BECO", "beco", 100), ("attn2mask+BECO", "beco", 500)]
    with pytest.raises(ValueError, match=r"beco_sizes \[200\] are not in sizes \[50, 100, 500\]"):
        size_arms([50, 100, 500], [200, 500])


def test_segmenter_workers_import_no_pipeline_code():
    """fit_all's spawned workers import ``segmenters``: it must not pull in diffusers (seconds per pool)."""
    code = "import sys, a2m_utils.study.segmenters; print(sorted({'diffusers', 'transformers', 'peft'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
