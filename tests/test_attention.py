import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F

from a2m_utils.capture import (
    attend,
    attention_probs,
    capture_attention,
    cross_attention_layers,
    layer_inputs,
    token_maps,
)


def inputs(unet, batch=2, seed=0, tokens=7):
    g = torch.Generator().manual_seed(seed)
    size = unet.config.sample_size
    x = torch.randn(batch, unet.config.in_channels, size, size, generator=g)
    ctx = torch.randn(batch, tokens, unet.config.cross_attention_dim, generator=g)
    return x, ctx


def manual_cross_attention(unet, x, t, ctx, keep_from=0):
    """softmax(QK^T / sqrt(d)) recomputed from the projections, mean over heads, resized, mean over layers."""
    qk = {}
    hooks = []
    for name, mod in unet.named_modules():
        if name.endswith("attn2"):
            hooks.append(mod.to_q.register_forward_hook(lambda m, i, o, n=name: qk.setdefault(n, {}).update(q=o)))
            hooks.append(mod.to_k.register_forward_hook(lambda m, i, o, n=name: qk.setdefault(n, {}).update(k=o)))
    with torch.no_grad():
        unet(x, t, ctx)
    for h in hooks:
        h.remove()
    H, W = x.shape[-2:]
    total = 0
    for name, d in qk.items():
        heads = unet.get_submodule(name).heads
        q = d["q"].unflatten(-1, (heads, -1)).transpose(1, 2)  # b, h, n, d
        k = d["k"].unflatten(-1, (heads, -1)).transpose(1, 2)
        p = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1]), -1).mean(1)[keep_from:]
        side = math.isqrt(p.shape[1])  # square latents
        m = p.transpose(1, 2).unflatten(2, (side, side))
        total = total + F.interpolate(m, size=(H, W), mode="bilinear", align_corners=False)
    return total / len(qk)


def test_capture_equals_manual_softmax(unet):
    x, ctx = inputs(unet)
    with torch.no_grad(), capture_attention(unet, guidance=False) as store:
        unet(x, 10, ctx)
    got = store.cross_attention()
    assert got.shape == (2, ctx.shape[1], *x.shape[-2:])
    torch.testing.assert_close(got, manual_cross_attention(unet, x, 10, ctx), atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(got.sum(1), torch.ones_like(got.sum(1)), atol=1e-4, rtol=0)


def test_guidance_keeps_conditional_half(unet):
    x, ctx = inputs(unet, batch=4)
    with torch.no_grad(), capture_attention(unet, guidance=True) as store:
        unet(x, 10, ctx)
    assert store.cross_attention().shape[0] == 2
    torch.testing.assert_close(store.cross_attention(), manual_cross_attention(unet, x, 10, ctx, keep_from=2),
                               atol=1e-5, rtol=1e-4)


def test_fires_per_layer_and_step_and_restores(unet):
    before = unet.attn_processors
    n_layers, n_steps = len(cross_attention_layers(unet)), 3
    x, ctx = inputs(unet)
    running = {}  # the processor each layer ran with, read inside the forward
    hooks = [unet.get_submodule(name.removesuffix(".processor")).register_forward_pre_hook(
        lambda m, a, n=name: running.update({n: m.processor})) for name in before]
    with torch.no_grad(), capture_attention(unet, guidance=False) as store:
        for i in range(n_steps):
            unet(x, 100 * i, ctx)
        between = unet.attn_processors
    for h in hooks:
        h.remove()
    assert store.calls == n_layers * n_steps
    assert store.steps_used == [(0, 0), (1, 100), (2, 200)]
    for name, proc in running.items():  # self-attention keeps its original (fused) processor
        assert (proc is before[name]) == (".attn1." in name)
    assert all(between[k] is before[k] for k in before)  # swapped in for a captured forward alone
    after = unet.attn_processors
    assert after.keys() == before.keys() and all(after[k] is before[k] for k in before)


def test_compiled_unet_runs_compiled_on_uncaptured_steps(unet):
    """Under ``torch.compile`` the captured step runs eagerly with the capturing processors and the
    others keep the compiled graph: no recompilation, and the maps of an eager capture."""
    x, ctx = inputs(unet)
    with torch.no_grad(), capture_attention(unet, steps=1, guidance=False) as eager:
        for i in range(3):
            unet(x, torch.tensor(i), ctx)
    torch._dynamo.reset()
    compiled = torch.compile(unet, backend="eager")
    with torch.no_grad():
        compiled(x, torch.tensor(0), ctx)
        with torch._dynamo.config.patch(error_on_recompile=True), \
                capture_attention(compiled, steps=1, guidance=False) as store:
            for i in range(3):
                compiled(x, torch.tensor(i), ctx)  # a tensor, as pipelines pass it
    torch._dynamo.reset()
    assert store.steps_used == [(1, 1)] and store.calls == len(cross_attention_layers(unet))
    torch.testing.assert_close(store.cross_attention(), eager.cross_attention())


def test_restores_processors_after_error(unet):
    before = unet.attn_processors
    with pytest.raises(RuntimeError, match="boom"), capture_attention(unet):
        raise RuntimeError("boom")
    assert all(unet.attn_processors[k] is before[k] for k in before)


def test_capture_does_not_change_the_output(unet):
    x, ctx = inputs(unet)
    with torch.no_grad():
        plain = unet(x, 10, ctx).sample
        with capture_attention(unet, guidance=False):
            captured = unet(x, 10, ctx).sample
    torch.testing.assert_close(captured, plain, atol=1e-5, rtol=1e-4)


def test_chosen_step_is_that_steps_maps(unet):
    steps = [inputs(unet, seed=s) for s in range(3)]
    with torch.no_grad(), capture_attention(unet, steps=1, guidance=False) as store:
        for i, (x, ctx) in enumerate(steps):
            unet(x, 500 - i, ctx)
    x, ctx = steps[1]
    expected = manual_cross_attention(unet, x, 499, ctx)
    torch.testing.assert_close(store.cross_attention(), expected, atol=1e-5, rtol=1e-4)
    assert store.steps_used == [(1, 499)]
    with torch.no_grad(), capture_attention(unet, guidance=False) as mean:
        for i, (x, ctx) in enumerate(steps):
            unet(x, 500 - i, ctx)
    assert not torch.allclose(mean.cross_attention(), expected, atol=1e-3)


def test_step_window(unet):
    steps = [inputs(unet, seed=s) for s in range(4)]
    with torch.no_grad(), capture_attention(unet, steps=range(1, 3), guidance=False) as store:
        for i, (x, ctx) in enumerate(steps):
            unet(x, i, ctx)
    expected = (manual_cross_attention(unet, steps[1][0], 1, steps[1][1])
                + manual_cross_attention(unet, steps[2][0], 2, steps[2][1])) / 2
    torch.testing.assert_close(store.cross_attention(), expected, atol=1e-5, rtol=1e-4)
    assert [s for s, _ in store.steps_used] == [1, 2]


def test_each_steps_first_forward_is_captured(unet):
    """With ``forwards_per_step`` a step's first forward is captured (a conditional pass run apart from its
    unconditional one); the configuration is a frozen ``CaptureConfig``, apart from the running sums."""
    forwards = [inputs(unet, seed=s) for s in range(4)]
    with torch.no_grad(), capture_attention(unet, guidance=False, forwards_per_step=2) as store:
        for i, (x, ctx) in enumerate(forwards):
            unet(x, 10 * i, ctx)
    assert store.steps_used == [(0, 0), (1, 20)] and store.calls == 2 * len(cross_attention_layers(unet))
    expected = (manual_cross_attention(unet, forwards[0][0], 0, forwards[0][1])
                + manual_cross_attention(unet, forwards[2][0], 20, forwards[2][1])) / 2
    torch.testing.assert_close(store.cross_attention(), expected, atol=1e-5, rtol=1e-4)
    with pytest.raises(dataclasses.FrozenInstanceError):
        store.config.steps = 3


def test_memory_does_not_grow_with_steps(unet):
    peaks = []
    for n in (2, 8):
        x, ctx = inputs(unet)
        with torch.no_grad(), capture_attention(unet, guidance=False) as store:
            for i in range(n):
                unet(x, i, ctx)
        peaks.append(store.peak_bytes)
    assert peaks[0] == peaks[1] > 0


def test_self_attention_at_one_resolution(unet):
    x, ctx = inputs(unet)
    res = x.shape[-1] // 2
    with torch.no_grad(), capture_attention(unet, guidance=False, self_attention_res=res) as store:
        out = unet(x, 3, ctx).sample
    aff = store.self_attention()
    assert aff.shape == (2, res * res, res * res)
    torch.testing.assert_close(aff.sum(-1), torch.ones(2, res * res), atol=1e-4, rtol=0)
    with torch.no_grad():
        torch.testing.assert_close(out, unet(x, 3, ctx).sample, atol=1e-5, rtol=1e-4)


def test_bad_input(unet):
    with pytest.raises(ValueError, match="non-negative"), capture_attention(unet, steps=-1):
        pass
    with pytest.raises(ValueError, match="forwards_per_step must be at least 1"), \
            capture_attention(unet, forwards_per_step=0):
        pass
    x, ctx = inputs(unet, batch=3)
    with pytest.raises(ValueError, match="even batch"), torch.no_grad(), capture_attention(unet, guidance=True):
        unet(x, 1, ctx)
    with pytest.raises(RuntimeError, match="never ran"):
        with torch.no_grad(), capture_attention(unet, steps=5, guidance=False) as store:
            unet(*inputs(unet)[:1], 1, inputs(unet)[1])
        store.cross_attention()


def test_maps_by_layer_resolution(unet):
    x, ctx = inputs(unet)
    with torch.no_grad(), capture_attention(unet, guidance=False) as store:
        unet(x, 10, ctx)
    res = store.resolutions
    assert len(res) >= 2 and res[0] == max(res)
    weights = {r: store.cross_counts[r] for r in res}
    mean = sum(store.cross_attention(r) * weights[r] for r in res) / sum(weights.values())
    torch.testing.assert_close(mean, store.cross_attention())
    assert not torch.allclose(store.cross_attention(res[0]), store.cross_attention(res[-1]), atol=1e-4)


def test_one_function_per_equation_on_one_layer(unet):
    """Eqs. 1-3 on the recorded inputs of one layer: Eq. 2 is the captured softmax, Eq. 1 with the
    output projection is the layer's own output, Eq. 3 is the map per token."""
    x, ctx = inputs(unet)
    outputs = {}
    name = cross_attention_layers(unet)[0].removesuffix(".processor")
    hook = unet.get_submodule(name).register_forward_hook(lambda m, i, o: outputs.setdefault("out", o))
    with torch.no_grad(), layer_inputs(unet, step=1) as layer:
        unet(x, 10, ctx)  # step 0
        outputs.clear()
        unet(x, 5, ctx)  # step 1
    hook.remove()
    assert layer.name == name and layer.f.shape[0] == 2 and torch.equal(layer.s, ctx)
    with torch.no_grad():
        probs = attention_probs(layer.attn, layer.f, layer.s)
        out = layer.attn.to_out[0](attend(layer.attn, probs, layer.s))
        maps = token_maps(probs, layer.attn.heads, layer.hw)
    assert probs.shape == (2 * layer.attn.heads, layer.f.shape[1], ctx.shape[1])
    torch.testing.assert_close(probs.sum(-1), torch.ones_like(probs.sum(-1)))
    torch.testing.assert_close(out, outputs["out"], atol=1e-5, rtol=1e-4)
    assert maps.shape == (2, ctx.shape[1], *layer.hw) and layer.hw[0] * layer.hw[1] == layer.f.shape[1]
    with pytest.raises(RuntimeError, match="step 3 never ran"), torch.no_grad(), layer_inputs(unet, step=3):
        unet(x, 10, ctx)
    with pytest.raises(ValueError, match="no cross-attention layer"), layer_inputs(unet, layer="nope"):
        pass
