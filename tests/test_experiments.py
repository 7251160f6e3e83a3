from a2m_utils.study.experiments import table5_conclusions


def test_table5_conclusions_compare_the_refinement_with_the_toy_preset():
    got = {"threshold 64": 0.30, "threshold 128": 0.35, "otsu": 0.33, "dcrf beta 0": 0.52, "dcrf beta 0.2": 0.36,
           "self-attention refinement": 0.42}
    lines = table5_conclusions([{"post_processing": k, "segmenter_mIoU": v} for k, v in got.items()], 0.0)
    assert "best of the paper's variants is dcrf beta 0 (0.520): not reproduced" in lines[0]
    assert lines[1].endswith("Here: -16.0 points.")
    assert "0.420 vs dcrf beta 0 (the preset's) 0.520: it does not beat it" in lines[-1]
