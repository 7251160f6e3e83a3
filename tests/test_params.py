"""The notebooks' parameters (``a2m_utils.study.params``): every default meets its rule; in notebook 03, run by
papermill, a wrong type, a value out of range and a misspelt name each stop the check cell with one line naming
the parameter, before any heavy cell; the profile runner refuses the same before any notebook starts."""

import nbformat
import papermill as pm
import pytest

from a2m_utils.study import params
from a2m_utils.study.report import REPO
from a2m_utils.study.runner import NOTEBOOKS, run_profile

ALL = sorted(p.stem for p in NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))
NB03 = "03_postprocessing_ablation"


@pytest.mark.parametrize("name", ALL)
def test_every_parameter_has_a_rule_that_its_default_meets(name):
    declared = params.declared(name)
    assert set(declared) <= set(params.rules())
    assert params.problems(declared, name, given=declared) == []


def test_none_is_taken_where_the_default_is_none_or_the_rule_says_so():
    defaults = params.declared("06_segmentation_training")
    assert params.problems(defaults | {"beco_steps": None, "fgbg_train_set": None, "image_size": None,
                                       "val_set": "voc:data/VOCdevkit/VOC2012"}, "06_segmentation_training", []) == []
    assert params.problems(defaults | {"beta": None}, "06_segmentation_training", []) == [
        "beta = None: beta takes a number from 0 to 1"]


@pytest.mark.parametrize(("given", "line"), [
    ({"n_images": "abc"}, "n_images = 'abc': n_images takes an integer >= 1"),
    ({"seg_steps": 2.5}, "seg_steps = 2.5: seg_steps takes an integer >= 1"),
    ({"n_val": -3}, "n_val = -3: n_val takes an integer >= 1"),
    ({"seg_step": 1000}, f"seg_step: not a parameter of {NB03} (did you mean seg_steps?); its parameters: "),
])
def test_notebook_03_stops_at_its_check_cell_with_one_line(given, line, tmp_path):
    out = tmp_path / "out.ipynb"
    with pytest.raises(pm.PapermillExecutionError) as err:
        pm.execute_notebook(NOTEBOOKS / f"{NB03}.ipynb", out, parameters=given, cwd=str(REPO), kernel_name="python3",
                            progress_bar=False)
    assert err.value.ename == "ValueError" and err.value.evalue.startswith(line) and "\n" not in err.value.evalue
    cells = [c for c in nbformat.read(out, as_version=4).cells if c.cell_type == "code"]
    check = next(i for i, c in enumerate(cells) if c.id == "check-parameters")
    assert all(c.execution_count is None for c in cells[check + 1:])  # nothing after the check ran


def test_runner_refuses_bad_parameters_before_any_notebook_runs(tmp_path):
    profile = tmp_path / "typo.yaml"
    profile.write_text(f"{NB03}: {{seg_step: 1000}}\n04_nti_comparison: {{n_val: -3, nti_steps: 10}}\n")
    with pytest.raises(ValueError) as err:
        run_profile(profile, out_root=tmp_path / "out")
    first, second = str(err.value).splitlines()
    assert first.startswith(f"{NB03}: seg_step: not a parameter of {NB03} (did you mean seg_steps?)")
    assert second == "04_nti_comparison: n_val = -3: n_val takes an integer >= 1"
    assert not (tmp_path / "out").exists()
