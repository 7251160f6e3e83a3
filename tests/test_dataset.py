import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from a2m_utils.study import experiments
from a2m_utils import prompts as prompt_sets
from a2m_utils.backends import TOY_DEFAULT, load_backend
from a2m_utils.toy.world import TOY
from a2m_utils.dataset import (
    DatasetError,
    DatasetWriter,
    Settings,
    load_sample,
    merge,
    sample_id,
)
from a2m_utils.seg_data import VOCLayout
from a2m_utils.tokens import NoClassInPromptError

SETTINGS = Settings(model="models/toy-t2i", vocab="toy", num_steps=3, guidance_scale=3.0, capture_steps=None,
                    sampler="ddim", batch_size=2)
CLI = [sys.executable, "-m", "a2m_utils.make_dataset", "--n", "10", "--steps", "3", "--batch-size", "2",
       "--threads", "1"]


def tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def backend():
    return load_backend("toy")


@pytest.fixture(scope="module")
def reference(tmp_path_factory, backend):
    root = tmp_path_factory.mktemp("ref")
    DatasetWriter(root, backend, TOY, prompt_sets.toy_prompts(6), SETTINGS).run(progress=False)
    merge(root)
    return root


def test_layout_reads_with_a_plain_reader(reference):
    ids = (reference / "ImageSets/Segmentation/train.txt").read_text().split()
    assert ids == [sample_id(i) for i in range(6)]
    for sid in ids:
        image = Image.open(reference / "JPEGImages" / f"{sid}.jpg")
        mask = Image.open(reference / "SegmentationClass" / f"{sid}.png")
        assert image.size == mask.size == (32, 32) and mask.mode == "P"
        meta = json.loads((reference / "meta" / f"{sid}.json").read_text())
        assert set(np.unique(np.asarray(mask))) <= {0, *(TOY.index(c) for c in meta["classes"])}
    lines = [json.loads(x) for x in (reference / "manifest.jsonl").read_text().splitlines()]
    assert [m["id"] for m in lines] == ids and lines[0]["model"] == "models/toy-t2i"
    images, labels, reliable = VOCLayout(reference).arrays()  # the kit's own segmentation dataset
    assert images.shape == (6, 32, 32, 3) and labels.shape == reliable.shape == (6, 32, 32)
    s = load_sample(reference, ids[0])
    assert s["maps"].shape[0] == len(s["class_ids"]) and s["reliability"].dtype == bool


def test_same_seed_same_files(tmp_path, backend, reference):
    DatasetWriter(tmp_path, backend, TOY, prompt_sets.toy_prompts(6), SETTINGS).run(progress=False)
    merge(tmp_path)
    assert tree(tmp_path) == tree(reference)


def test_two_shards_merged_equal_one_process(tmp_path, backend, reference):
    a, b = tmp_path / "a", tmp_path / "b"
    for root, shard in ((a, 0), (b, 1)):
        DatasetWriter(root, backend, TOY, prompt_sets.toy_prompts(6), SETTINGS).run(shard, 2, progress=False)
    with pytest.raises(DatasetError, match="missing or incomplete"):
        merge(a)
    assert merge(a, [b]) == 6
    assert tree(a) == tree(reference)


def test_killed_run_resumes_to_the_uninterrupted_result(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    full, killed = tmp_path / "full", tmp_path / "killed"
    subprocess.run([*CLI, "--out", str(full)], check=True, env=env, capture_output=True)
    proc = subprocess.Popen([*CLI, "--out", str(killed)], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while len(list((killed / "meta").glob("*.json"))) < 3 and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done_before = len(list((killed / "meta").glob("*.json")))
    assert 3 <= done_before < 10, "the run was not interrupted part way"
    assert not (killed / "manifest.jsonl").exists()
    out = subprocess.run([*CLI, "--out", str(killed)], check=True, env=env, capture_output=True, text=True).stdout
    redone = int(out.split("samples generated")[0].split()[-1])
    assert 10 - done_before <= redone <= 10 - done_before + 1  # at most one partial batch of 2 redone
    assert tree(killed) == tree(full)


def test_prompt_naming_no_class(tmp_path, backend):
    bad = [*prompt_sets.toy_prompts(2), prompt_sets.Prompt("a red hexagon", ("circle",), 5)]
    with pytest.raises(NoClassInPromptError, match="hexagon"):
        DatasetWriter(tmp_path / "x", backend, TOY, bad, SETTINGS)
    writer = DatasetWriter(tmp_path / "y", backend, TOY, bad, SETTINGS, skip_unknown=True)
    assert [p.text for p in writer.skipped] == ["a red hexagon"] and len(writer.prompts) == 2


def test_folder_made_with_other_settings_is_refused(tmp_path, backend):
    DatasetWriter(tmp_path, backend, TOY, prompt_sets.toy_prompts(2), SETTINGS)
    with pytest.raises(DatasetError, match="other settings"):
        DatasetWriter(tmp_path, backend, TOY, prompt_sets.toy_prompts(2), replace(SETTINGS, beta=0.0))
    with pytest.raises(DatasetError, match="other settings or prompts"):
        DatasetWriter(tmp_path, backend, TOY, prompt_sets.toy_prompts(3), SETTINGS)


def test_corrupt_file_found_on_resume(tmp_path, backend, reference):
    shutil.copytree(reference, tmp_path, dirs_exist_ok=True)
    image = tmp_path / "JPEGImages" / f"{sample_id(3)}.jpg"
    image.write_bytes(image.read_bytes()[:100])
    writer = DatasetWriter(tmp_path, backend, TOY, prompt_sets.toy_prompts(6), SETTINGS)
    with pytest.raises(DatasetError, match=f"{sample_id(3)}.jpg is missing or corrupt"):
        writer.run(progress=False)
    repaired = DatasetWriter(tmp_path, backend, TOY, prompt_sets.toy_prompts(6), SETTINGS, repair=True)
    assert repaired.run(progress=False) == 2  # the batch holding sample 3
    assert tree(tmp_path) == tree(reference)


def test_missing_and_unreadable_checkpoints(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing"):
        load_backend("toy", tmp_path / "nowhere")
    shutil.copytree(TOY_DEFAULT, tmp_path / "toy")
    weights = next((tmp_path / "toy" / "unet").glob("*.safetensors"))
    weights.write_bytes(b"not a safetensors file")
    with pytest.raises(OSError, match="unreadable"):
        load_backend("toy", tmp_path / "toy")
    with pytest.raises(FileNotFoundError, match="no such folder"):
        load_backend("sd", tmp_path / "no-sd")


def test_shard_spec_is_checked():
    from a2m_utils.make_dataset import main

    with pytest.raises(SystemExit, match="i/n"):
        main(["--out", "unused", "--shard", "2of4", "--n", "1"])


def test_post_processing_redone_from_stored_maps(reference, backend, tmp_path):
    stored = np.stack([np.asarray(Image.open(p)) for p in sorted((reference / "SegmentationClass").glob("*.png"))])
    assert np.array_equal(experiments.relabel(reference, "dcrf", beta=SETTINGS.beta), stored)
    assert not np.array_equal(experiments.relabel(reference, "threshold", theta=64), stored)
    with pytest.raises(ValueError, match="without self-attention"):
        experiments.relabel(reference, "refine")
    refined = replace(SETTINGS, self_attention_res=16)
    DatasetWriter(tmp_path, backend, TOY, prompt_sets.toy_prompts(2), refined).run(progress=False)
    merge(tmp_path)
    labels = experiments.relabel(tmp_path, "refine")
    assert labels.shape == (2, 32, 32) and set(np.unique(labels)) <= {0, 255, *range(1, TOY.num_classes)}


def test_pseudo_mask_scores_skip_ignored_pixels():
    truth = np.array([[0, 1], [1, 1]], dtype=np.uint8)
    pred = np.array([[0, 255], [1, 0]], dtype=np.uint8)
    s = experiments.pseudo_mask_scores(pred, truth, 2)
    assert s["labelled"] == 0.75 and s["pixel_acc"] == pytest.approx(2 / 3)


def test_folder_made_by_another_model_is_refused(tmp_path, backend):
    DatasetWriter(tmp_path, backend, TOY, prompt_sets.toy_prompts(2), SETTINGS)
    other = load_backend("toy")
    with torch.no_grad():
        next(other.unet.parameters()).add_(1.0)
    with pytest.raises(DatasetError, match="model_sha256"):
        DatasetWriter(tmp_path, other, TOY, prompt_sets.toy_prompts(2), SETTINGS)
