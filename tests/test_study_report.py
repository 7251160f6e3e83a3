from a2m_utils.study.summary import _mask_quality_rows


def test_mask_quality_rows_state_the_beta_of_each_miou():
    metrics = {"parameters": {"beta": 0.0, "probe_beta": 0.2}, "rendered_attention_miou": 0.69,
               "generated_pseudomask_miou": 0.69, "prompt_fidelity": 0.5,
               "rendered_attention_miou_by_beta": {"0.0": 0.99, "0.2": 0.69},
               "generated_pseudomask_miou_by_beta": {"0.0": 0.69, "0.2": 0.59}}
    assert _mask_quality_rows(metrics) == [
        ["rendered_attention_miou (beta 0.2)", 0.69], ["generated_pseudomask_miou (beta 0.0)", 0.69],
        ["prompt_fidelity", 0.5], ["rendered_attention_miou (beta 0.0)", 0.99],
        ["generated_pseudomask_miou (beta 0.2)", 0.59]]
    assert _mask_quality_rows({"rendered_attention_miou": 0.5}) == [["rendered_attention_miou", 0.5]]
