import json

import pytest

from a2m_utils.study.bands import band_rows, section
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


def _write(root, notebook, metrics):
    (root / notebook).mkdir(parents=True)
    (root / notebook / "metrics.json").write_text(json.dumps(metrics))


def _table6(a2m):
    return {"table6": [{"method": "attn2mask", "mIoU": a2m}, {"method": "NTI on the train set and retraining", "mIoU": 0.6},
                       {"method": "NTI on the val set", "mIoU": 0.5}]}


def test_band_rows_compare_two_kernel_paths_and_flag_a_verdict_that_flips(tmp_path):
    here, there = tmp_path / "results", tmp_path / "results" / "bands" / "no-amx"
    _write(here, "04_nti_comparison", _table6(0.65))
    _write(there, "04_nti_comparison", _table6(0.55))
    _write(here, "02_mask_building", {"generated_pseudomask_miou": 0.73})
    _write(there, "02_mask_building", {"generated_pseudomask_miou": 0.72})
    numbers, verdicts = band_rows(here, there)
    assert numbers[0][1:5] == ["generated images vs the oracle", 0.73, None, 0.72]
    assert [r[1] for r in numbers[1:]] == ["attn2mask", "NTI on the train set and retraining", "NTI on the val set"]
    assert numbers[1][5] == pytest.approx(-0.10)
    assert verdicts == [["table6", "attn2mask >= NTI (reproduced)", "NTI beats attn2mask (not reproduced)", "no"]]
    report = "\n".join(section(here))
    assert "## Reproduction band: no-amx" in report and "ONEDNN_MAX_CPU_ISA" in report


def test_table4_band_verdict_reads_the_floor(tmp_path):
    rows = [{"method": "attn2mask", "mIoU": 0.03, "mIoU_std": 0.006, "pixel_acc": 0.1, "pixel_acc_std": 0.01},
            {"method": "attn2mask-LoRA", "mIoU": 0.30, "mIoU_std": 0.01, "pixel_acc": 0.7, "pixel_acc_std": 0.02}]
    here, there = tmp_path / "a", tmp_path / "b"
    _write(here, "05_lora_adaptation", {"table4": rows, "floors": [{"floor": "all road", "mIoU": 0.14, "pixel_acc": 0.5}]})
    _write(there, "05_lora_adaptation", {"table4": [rows[0], rows[1] | {"mIoU": 0.15}]})
    assert band_rows(here, there)[1] == [["table4", "reproduced", "not reproduced", "no"]]
