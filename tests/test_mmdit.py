"""``a2m.trace`` on MM-DiT pipelines (SD3/3.5, Flux.1) through their joint attention: the README's five lines,
the captured maps against the joint softmax recomputed from each layer's own projections, guidance,
the text layout, ``torch.compile``, and the tiny random pipelines' builders."""

import json

import numpy as np
import pytest
import torch
from diffusers import FluxPipeline, StableDiffusion3Pipeline

import a2m_utils as a2m
from a2m_utils import dit, sd
from a2m_utils.capture import capture_attention
from a2m_utils.fast import fast
from a2m_utils.trace import text_layout

PROMPTS = ["a photo of a dog and a cat", "a potted plant next to a puppy"]
T5_POSITIONS = [{"cat": [7], "dog": [4]}, {"dog": [6], "pottedplant": [1, 2]}]  # T5: the first word at 0
CLIP_POSITIONS = [{"cat": [8], "dog": [5]}, {"dog": [7], "pottedplant": [2, 3]}]  # CLIP: its start token at 0


@pytest.fixture(scope="module")
def tokenizers(tmp_path_factory):
    """SD3's two CLIP tokenizers (built offline from open-clip-torch's BPE file) and the T5 tokenizer."""
    return (*sd.sdxl_tokenizers(tmp_path_factory.mktemp("clip")), dit.t5_tokenizer())


def tiny(arch: str, tokenizers):
    clip, clip_2, t5 = tokenizers
    if arch == "flux":
        return dit.random_flux(clip, t5, tiny=True)
    return dit.random_sd3(clip, clip_2, t5, tiny=True, sd35=arch == "sd35")


def call(pipe, prompts=PROMPTS, steps=3, **kwargs):
    """``pipe(prompts, ...)`` at 32x32 (the tiny Flux's images; the tiny SD3's by default), image i from seed i."""
    size = {"height": 32, "width": 32} if isinstance(pipe, FluxPipeline) else {}
    generators = [torch.Generator().manual_seed(i) for i in range(len(prompts))]
    return pipe(prompts, num_inference_steps=steps, generator=generators, **size, **kwargs)


def joint_layers(model):
    """Every attention module of the transformer that sees the text."""
    return [b.attn for b in (*model.transformer_blocks, *getattr(model, "single_transformer_blocks", ()))]


def record(model, forward):
    """Forward hooks keeping, at the transformer's ``forward``-th call (from 0), each text-seeing attention
    layer's q/k/v projections and output, the text length and Flux's rotary (cos, sin): independent of the kit."""
    seen, count = {"layers": {}}, [-1]

    def on_model(module, args, kwargs):
        count[0] += 1
        if count[0] == forward:
            seen["text"] = kwargs["encoder_hidden_states"].shape[1]

    def keep(key, part):
        def hook(module, args, out):
            if count[0] == forward:
                seen["layers"].setdefault(key, {})[part] = out
        return hook

    hooks = [model.register_forward_pre_hook(on_model, with_kwargs=True)]
    if hasattr(model, "pos_embed") and hasattr(model.pos_embed, "axes_dim"):
        hooks.append(model.pos_embed.register_forward_hook(keep("rotary", "cos_sin")))
    for i, attn in enumerate(joint_layers(model)):
        parts = ["to_q", "to_k", "to_v", "add_q_proj", "add_k_proj", "add_v_proj"]
        hooks += [getattr(attn, p).register_forward_hook(keep(i, p)) for p in parts if hasattr(attn, p)]
        hooks.append(attn.register_forward_hook(keep(i, "out")))
    return seen, hooks


def rotate(x, cos, sin):
    """Flux's rotary embedding on (B, S, heads, d): consecutive pairs (x1, x2) -> (x1 cos - x2 sin, x2 cos + x1 sin)."""
    pairs = x.unflatten(-1, (-1, 2))
    turned = torch.stack([-pairs[..., 1], pairs[..., 0]], -1).flatten(-2)
    return x * cos[None, :, None] + turned * sin[None, :, None]


def per_head(attn, x, norm=None):
    """A projection (B, S, heads * d) as (B, S, heads, d), RMS-normed over d where the layer has that norm."""
    x = x.unflatten(-1, (attn.heads, -1))
    return x if norm is None else norm(x)


def recomputed(model, seen, conditional_half):
    """The joint softmax of every recorded layer from its own projections (RMS norms, Flux's rotary), checked to give
    the layer's own output; its image-query/text-key block renormalised over the text keys, mean over heads
    and layers, the conditional half: (b, text, h, w)."""
    flux = "rotary" in seen["layers"]
    maps = []
    for i, attn in enumerate(joint_layers(model)):
        rec = seen["layers"][i]
        q, k, v = (per_head(attn, rec["to_q"], attn.norm_q), per_head(attn, rec["to_k"], attn.norm_k),
                   per_head(attn, rec["to_v"]))
        text = seen["text"]
        if "add_q_proj" in rec:  # a double-stream block: the text stream joins
            tq, tk, tv = (per_head(attn, rec["add_q_proj"], attn.norm_added_q),
                          per_head(attn, rec["add_k_proj"], attn.norm_added_k), per_head(attn, rec["add_v_proj"]))
            order = (lambda t, x: torch.cat([t, x], 1)) if flux else (lambda t, x: torch.cat([x, t], 1))
            q, k, v = order(tq, q), order(tk, k), order(tv, v)
        if flux:
            cos, sin = seen["layers"]["rotary"]["cos_sin"]
            q, k = rotate(q, cos, sin), rotate(k, cos, sin)
        probs = torch.softmax(torch.einsum("bshd,bthd->bhst", q, k) / q.shape[-1] ** 0.5, -1)
        out = torch.einsum("bhst,bthd->bshd", probs, v).flatten(2)
        image = slice(text, None) if flux else slice(0, out.shape[1] - text)
        words = slice(0, text) if flux else slice(out.shape[1] - text, None)
        own = rec["out"][0] if isinstance(rec["out"], tuple) else rec["out"]
        mine = out[:, image] if own.shape[1] < out.shape[1] else out
        torch.testing.assert_close(attn.to_out[0](mine) if hasattr(attn, "to_out") else mine, own,
                                   atol=1e-5, rtol=1e-4)  # the recomputation is the layer's own attention
        block = probs[:, :, image, words]
        block = (block / block.sum(-1, keepdim=True)).mean(1)
        maps.append(block[len(block) // 2:] if conditional_half else block)
    side = int(maps[0].shape[1] ** 0.5)
    return (sum(maps) / len(maps)).transpose(1, 2).unflatten(2, (side, side))


GUIDANCE = {  # arch, call arguments, whether the batch is [unconditional, conditional], forwards per step
    "sd3 guided": ("sd3", {"guidance_scale": 7.0}, True, 1),
    "sd3 unguided": ("sd3", {"guidance_scale": 1.0}, False, 1),
    "sd3.5 guided": ("sd35", {"guidance_scale": 7.0}, True, 1),
    "flux distilled": ("flux", {"guidance_scale": 3.5}, False, 1),
    "flux true cfg": ("flux", {"negative_prompt": ["blurry"] * 2, "true_cfg_scale": 4.0}, False, 2),
}


@pytest.mark.parametrize("case", GUIDANCE)
def test_maps_equal_the_joint_softmax_recomputed(case, tokenizers):
    arch, kwargs, halves, forwards = GUIDANCE[case]
    pipe = tiny(arch, tokenizers)
    seen, hooks = record(pipe.transformer, forward=1 * forwards)  # step 1's first (conditional) forward
    with torch.no_grad(), a2m.trace(pipe, steps=1) as t:
        call(pipe, **kwargs)
    for h in hooks:
        h.remove()
    assert t.store.guidance is halves and t.store.config.forwards_per_step == forwards
    assert len(seen["layers"][0]["to_q"]) == 2 * (2 if halves else 1)
    got = t.store.cross_attention()
    assert got.shape == (2, seen["text"], 8, 8) and t.store.calls == len(joint_layers(pipe.transformer))
    expected = recomputed(pipe.transformer, seen, conditional_half=halves)
    torch.testing.assert_close(got, expected, atol=1e-6, rtol=0)
    torch.testing.assert_close(got.sum(1), torch.ones(2, 8, 8), atol=1e-5, rtol=0)


@pytest.mark.parametrize("arch", ["sd3", "flux"])
def test_readme_example(arch, tokenizers):
    pipe = tiny(arch, tokenizers)
    processors = {k: type(v) for k, v in pipe.transformer.attn_processors.items()}
    with a2m.trace(pipe, steps=2) as t:
        out = call(pipe, steps=4)
    pms = t.pseudo_masks(classes=a2m.VOC)
    assert [pm.positions for pm in pms] == T5_POSITIONS and t.prompts == PROMPTS
    for pm in pms:
        assert pm.label.shape == pm.reliability.shape == (32, 32) and set(np.unique(pm.label)) <= {0, *pm.class_ids}
    assert np.abs(np.stack([np.asarray(im) for im in out.images]).astype(int) - t.images).max() <= 1
    (step, timestep), = t.steps_used
    assert step == 2 and timestep == pytest.approx(float(pipe.scheduler.timesteps[2]), rel=1e-6)
    assert t.attention().shape == (2, 256 if arch == "sd3" else 512, 8, 8) and t.resolutions == [(8, 8)]
    words, maps = t.word_maps(1)
    assert words == ["a", "potted", "plant", "next", "to", "a", "puppy"] and maps.shape == (7, 8, 8)
    assert "encode_prompt" not in vars(pipe) and "postprocess" not in vars(pipe.image_processor)
    assert {k: type(v) for k, v in pipe.transformer.attn_processors.items()} == processors


def test_text_layout(tokenizers):
    """SD3's maps cover CLIP's 77 tokens then T5's; T5's label them, or CLIP's when the pipeline runs without T5.
    A class word past the pipeline's T5 length (``max_sequence_length``) is never labelled from another token."""
    pipe = tiny("sd3", tokenizers)
    layout = text_layout(pipe)
    assert layout.labels == "tokenizer_3" and layout.parts["tokenizer_3"].start == 77
    with a2m.trace(pipe, steps=0) as t:
        call(pipe, steps=1, max_sequence_length=8)  # T5's tokens 0-6, then its end token
    assert t.store.cross_attention().shape[1] == 77 + 8 and t.attention().shape[1] == 8
    with pytest.raises(a2m.ClassWordLostError, match="'cat' past the pipeline's text length of 8 tokens"):
        t.pseudo_masks(classes=a2m.VOC, method="argmax")
    kept = t.pseudo_masks(classes=a2m.VOC, method="argmax", on_missing="skip")
    assert kept[0] is None and kept[1].positions == T5_POSITIONS[1] and "cut off" in t.skipped[0][1]
    pipe.text_encoder_3 = None
    with a2m.trace(pipe, steps=0) as t:
        call(pipe, steps=1)
    assert t.layout.labels == "tokenizer" and t.attention().shape[1] == 77
    assert [pm.positions for pm in t.pseudo_masks(classes=a2m.VOC, method="argmax")] == CLIP_POSITIONS


@pytest.mark.parametrize("arch", ["sd3", "flux"])
def test_compiled_transformer_runs_compiled_on_uncaptured_steps(arch, tokenizers):
    """Under ``torch.compile`` the captured step runs eagerly with the capturing processors and the others keep
    the compiled graph: no recompilation, and the maps of an eager trace."""
    pipe = tiny(arch, tokenizers)
    with a2m.trace(pipe, steps=1) as eager:
        call(pipe)
    torch._dynamo.reset()
    pipe.transformer = torch.compile(pipe.transformer, backend="eager")
    call(pipe)
    with torch._dynamo.config.patch(error_on_recompile=True), a2m.trace(pipe, steps=1) as t:
        call(pipe)
    torch._dynamo.reset()
    assert t.steps_used == eager.steps_used
    torch.testing.assert_close(t.store.cross_attention(), eager.store.cross_attention())


def test_fast_flux_fuses_its_projections_and_keeps_the_maps(tokenizers):
    pipe = tiny("flux", tokenizers)
    with a2m.trace(pipe, steps=1) as plain:
        call(pipe)
    fast(pipe, compile=False)
    assert all(b.attn.fused_projections for b in pipe.transformer.transformer_blocks)
    with a2m.trace(pipe, steps=1) as fused:
        call(pipe)
    np.testing.assert_allclose(fused.attention(), plain.attention(), atol=1e-6, rtol=0)


def test_bad_input(tokenizers):
    pipe = tiny("sd3", tokenizers)
    with pytest.raises(ValueError, match="self-attention capture .* is for U-Nets"), \
            capture_attention(pipe.transformer, self_attention_res=4):
        pass
    pipe.transformer.fuse_qkv_projections()
    with pytest.raises(ValueError, match="FusedJointAttnProcessor2_0.*unfuse_qkv_projections"), a2m.trace(pipe):
        pass
    with pytest.raises(TypeError, match="cannot capture the attention of a Linear"), \
            capture_attention(torch.nn.Linear(2, 2)):
        pass


def test_tiny_pipelines_save_and_load(tmp_path, tokenizers):
    """The builders' pipelines load with ``from_pretrained`` and draw the same images; the T5 tokenizer has T5's
    layout (Unigram, Metaspace, ``</s>`` appended, ids 0-2) and no unknown token for lower-case text."""
    t5 = tokenizers[2]
    ids = t5("two puppies, a tvmonitor!").input_ids
    tokens = t5.convert_ids_to_tokens(ids)
    assert tokens[0] == "\u2581two" and "\u2581tvmonitor" in tokens and tokens[-1] == "</s>"
    assert t5.unk_token_id not in ids
    backend = json.loads(t5.backend_tokenizer.to_str())
    assert (backend["model"]["type"], backend["pre_tokenizer"]["type"]) == ("Unigram", "Metaspace")
    assert (t5.pad_token_id, t5.eos_token_id, t5.unk_token_id, t5.model_max_length) == (0, 1, 2, 512)
    for arch, cls in (("sd3", StableDiffusion3Pipeline), ("flux", FluxPipeline)):
        pipe = tiny(arch, tokenizers)
        pipe.save_pretrained(tmp_path / arch)
        again = cls.from_pretrained(tmp_path / arch)
        again.set_progress_bar_config(disable=True)
        assert type(again.transformer) is type(pipe.transformer)
        np.testing.assert_array_equal(call(again, steps=2, output_type="np").images,
                                      call(pipe, steps=2, output_type="np").images)
    with pytest.raises(SystemExit, match="not empty"):
        dit.main([str(tmp_path / "flux"), "flux", "--tiny"])
