from concurrent.futures import ThreadPoolExecutor

import pytest
import torch

from a2m_utils.atomic import save_torch, write_bytes


def test_writers_of_one_file_at_once_never_collide(tmp_path):
    """Two notebooks finishing one cached dataset write its manifest at the same moment."""
    path = tmp_path / "manifest.jsonl"
    data = b"x" * 100_000
    with ThreadPoolExecutor(4) as pool:
        digests = set(pool.map(lambda _: write_bytes(path, data), range(400)))
    assert len(digests) == 1 and path.read_bytes() == data
    assert [p.name for p in tmp_path.iterdir()] == ["manifest.jsonl"]  # no temporary file left


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "a.pt"
    save_torch({"step": 1}, path)
    with pytest.raises(Exception, match="pickle"):
        save_torch({"step": 2, "f": lambda: 0}, path)  # fails after the temporary file is opened
    assert torch.load(path) == {"step": 1} and [p.name for p in tmp_path.iterdir()] == ["a.pt"]
