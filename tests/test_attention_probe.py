import pytest

from a2m_utils.toy.pipeline import load_toy
from a2m_utils.toy.probe import attention_labels, rendered_attention_by_beta, rendered_attention_variants
from a2m_utils.toy.world import make_sample


@pytest.fixture(scope="module")
def model():
    return load_toy()


def test_several_betas_from_one_pass_match_one_beta_at_a_time(model):
    seeds = list(range(7 * 10**9, 7 * 10**9 + 6))
    together = rendered_attention_by_beta(model, seeds, betas=(0.0, 0.3), method="argmax", batch_size=4)
    for beta in (0.0, 0.3):
        alone = rendered_attention_variants(model, seeds, beta=beta, method="argmax", batch_size=4)
        for v in (False, True):
            assert together[beta][v]["miou"] == alone[v]["miou"]
    assert together[0.0][False]["miou"] != together[0.3][False]["miou"]


def test_a_higher_beta_only_turns_background_into_objects(model):
    """Eq. 5: A_0 = 1 - max_c A_c - beta, so a higher beta shrinks the background."""
    samples = [make_sample(7 * 10**9 + i) for i in range(3)]
    labels = attention_labels(model, samples, (500,), 0, (0.1, 0.4), "argmax")
    for low, high in zip(labels[0.1, False], labels[0.4, False]):
        changed = low != high
        assert changed.any() and (low[changed] == 0).all()
