"""``identity.model_identity``: which model made a dataset, from configs and a sample of the weight files."""

import shutil
import struct
from pathlib import Path

import pytest
import torch
from conftest import tiny_sd
from diffusers import StableDiffusionPipeline

from a2m_utils import identity
from a2m_utils.identity import file_identity, model_identity
from a2m_utils.lora import add_lora, lora_parameters, save_lora
from a2m_utils.toy.pipeline import TOY_DEFAULT, ToyPipeline, load_toy, new_toy

REPO = Path(__file__).resolve().parents[1]
STAGE3 = REPO / "models" / "toy-t2i-stage3"


def weight_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix in (".safetensors", ".bin"))


def test_the_same_folder_by_a_relative_and_an_absolute_path(monkeypatch):
    monkeypatch.chdir(REPO)
    relative = ToyPipeline.from_pretrained("models/toy-t2i")
    absolute = ToyPipeline.from_pretrained(TOY_DEFAULT)
    assert relative.name_or_path != absolute.name_or_path
    assert model_identity(relative) == model_identity(absolute) == model_identity(load_toy())
    assert len(model_identity(relative)) == 64


def test_another_model_folder_of_the_same_architecture_differs():
    ours, theirs = weight_files(TOY_DEFAULT), weight_files(STAGE3)
    assert [p.stat().st_size for p in ours] == [p.stat().st_size for p in theirs]  # only the sampled blocks differ
    assert model_identity(ToyPipeline.from_pretrained(STAGE3)) != model_identity(load_toy())


def test_an_adapter_changes_it(tmp_path):
    pipe = load_toy()
    base = model_identity(pipe)
    add_lora(pipe)  # B = 0: the same function, but another model to cache datasets under
    with_adapter = model_identity(pipe)
    assert with_adapter != base
    with torch.no_grad():
        next(p for k, p in lora_parameters(pipe).items() if ".lora_B." in k).add_(0.1)
    assert model_identity(pipe) not in (base, with_adapter)  # adapters are hashed whole
    save_lora(pipe, tmp_path)
    fresh = load_toy()
    fresh.load_lora_weights(tmp_path)
    assert model_identity(fresh) != base


def test_a_tiny_in_memory_pipeline(tmp_path):
    a, b = new_toy(0), new_toy(0)
    assert model_identity(a) == model_identity(b) != model_identity(new_toy(1))
    with torch.no_grad():  # built in memory: every weight is hashed
        next(a.unet.parameters()).add_(1.0)
    assert model_identity(a) != model_identity(b)
    sd = tiny_sd(tmp_path)
    assert model_identity(sd) == model_identity(tiny_sd(tmp_path)) != model_identity(tiny_sd(tmp_path).to(torch.float16))
    sd.save_pretrained(tmp_path / "pipe")
    loaded = [StableDiffusionPipeline.from_pretrained(tmp_path / "pipe") for _ in range(2)]
    assert model_identity(loaded[0]) == model_identity(loaded[1])


class CountingFile:
    def __init__(self, f, counts):
        self.f, self.counts = f, counts

    def read(self, n=-1):
        data = self.f.read(n)
        self.counts.append(len(data))
        return data

    def __getattr__(self, name):
        return getattr(self.f, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.f.close()


def test_it_reads_a_sample_of_the_weights_not_all_of_them(monkeypatch):
    pipe = load_toy()
    files = weight_files(TOY_DEFAULT)
    headers = []
    for p in files:
        with p.open("rb") as f:
            headers.append(8 + struct.unpack("<Q", f.read(8))[0])
    counts, real_open = [], Path.open
    monkeypatch.setattr(Path, "open", lambda self, *a, **k: CountingFile(real_open(self, *a, **k), counts))
    monkeypatch.setattr(identity, "tensor_digest", lambda tensors: pytest.fail("weights loaded from files were hashed"))
    model_identity(pipe)
    total = sum(p.stat().st_size for p in files)
    assert 0 < sum(counts) <= sum(headers) + len(files) * identity.BLOCKS * identity.BLOCK
    assert sum(counts) < total / 5, (sum(counts), total)


def test_a_file_identity_sees_its_header_and_its_sampled_blocks(tmp_path):
    src = next((TOY_DEFAULT / "unet").glob("*.safetensors"))
    copy = tmp_path / src.name
    shutil.copy(src, copy)
    assert file_identity(copy) == file_identity(src)
    data = bytearray(src.read_bytes())
    data[-1] ^= 0xFF  # the last block is always sampled
    copy.write_bytes(bytes(data))
    assert file_identity(copy) != file_identity(src)
