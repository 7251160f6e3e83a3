import torch
from transformers import CLIPTextModel

from a2m_utils.latents import embed
from a2m_utils.toy.pipeline import ToyPipeline, ToyTextEncoder, load_toy, local_causal_mask, new_toy


def test_local_causal_mask():
    m = local_causal_mask(5, 2)[0, 0]
    seen = m == 0
    assert seen.tolist() == [[j in (i - 1, i) for j in range(5)] for i in range(5)]


def test_windowed_text_encoder_keeps_words_local(tmp_path):
    pipe = new_toy(0, text_layers=1, text_window=3)
    assert isinstance(pipe, ToyPipeline) and isinstance(pipe.text_encoder, ToyTextEncoder)
    with torch.no_grad():
        a = embed(pipe, ["a red circle and a blue square"])[0]
        b = embed(pipe, ["a green circle and a blue square"])[0]
    changed = (a - b).abs().sum(-1) > 0
    assert changed.nonzero().flatten().tolist() == [2, 3, 4]  # "green" and the two tokens after it
    pipe.save_pretrained(tmp_path)
    with torch.no_grad():
        assert torch.equal(embed(load_toy(tmp_path), ["a red circle"]), embed(pipe, ["a red circle"]))
        assert torch.equal(embed(ToyPipeline.from_pretrained(tmp_path), ["a red circle"]), embed(pipe, ["a red circle"]))


def test_the_text_encoder_applies_its_window_itself():
    """The window lives in the model class: a plain call equals CLIP's forward with the local mask,
    and differs from CLIP's own (fully causal) encoding."""
    pipe = load_toy()
    te = pipe.text_encoder
    assert isinstance(te, ToyTextEncoder) and te.config.attention_window == 3
    ids = pipe.tokenizer(["a red circle and a blue square"], padding="max_length",
                         max_length=pipe.tokenizer.model_max_length, return_tensors="pt").input_ids
    with torch.no_grad():
        own = te(ids)[0]
        windowed = CLIPTextModel.forward(te, ids, attention_mask=local_causal_mask(ids.shape[1], 3))[0]
        causal = CLIPTextModel.forward(te, ids)[0]
    torch.testing.assert_close(own, windowed, rtol=0, atol=0)
    assert not torch.allclose(own, causal, atol=1e-4)
    assert torch.equal(own[:, :3], causal[:, :3])  # the first tokens see no further back than the window anyway
