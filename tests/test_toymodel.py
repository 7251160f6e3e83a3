import torch

from a2m_utils.backends import load_toy, local_causal_mask
from a2m_utils.toymodel import new_toy


def test_local_causal_mask():
    m = local_causal_mask(5, 2)[0, 0]
    seen = m == 0
    assert seen.tolist() == [[j in (i - 1, i) for j in range(5)] for i in range(5)]


def test_windowed_text_encoder_keeps_words_local(tmp_path):
    model = new_toy(0, text_layers=1, text_window=3)
    with torch.no_grad():
        a = model.encode(["a red circle and a blue square"])[0]
        b = model.encode(["a green circle and a blue square"])[0]
    changed = (a - b).abs().sum(-1) > 0
    assert changed.nonzero().flatten().tolist() == [2, 3, 4]  # "green" and the two tokens after it
    model.save(tmp_path)
    with torch.no_grad():
        assert torch.equal(load_toy(tmp_path).encode(["a red circle"]), model.encode(["a red circle"]))
