"""The readings under the notebooks' tables and figures say only what their inputs say, and every
figure and table of a notebook is followed by one.

Provenance: each reading is called on real-shaped inputs, the committed results/*/metrics.json (plus
the few inputs a notebook computes beside them). Every input number is then changed in turn; a number
in the reading's text is formatted from the inputs when it moves with one of them. The only other
numbers allowed are the inputs' own labels: numbers inside their keys and strings ("16x16", "0.2",
"dcrf beta 0.2") and the number of items of a list or dict. A number typed into a reading moves with
nothing and fails the test. The paper's numbers come in as inputs too (the table rows' ``paper_*``
columns, the ``paper_*`` keyword arguments), so they are checked the same way.
"""

from __future__ import annotations

import difflib
import json
import re
from pathlib import Path

import nbformat
import pytest

from a2m_utils.study import paper, readings

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "results"
NOTEBOOKS = sorted((REPO / "notebooks").glob("[0-9][0-9]_*.ipynb"))
NUMBER = re.compile(r"(?<![\w.])[+-]?\d[\d,]*(?:\.\d+)?%?")
REFERENCE = re.compile(r"\b(?:Eqs?\.|Tables?|Figs?\.|Sec\.|notebooks?)\s+\d+(?:\s*(?:-|–|,|and)\s*\d+)*")
SENTENCE_END = re.compile(r"(?<=[.!?])\*{0,2}\s+(?=[A-Z*$])")


def metrics(notebook: str) -> dict:
    return json.loads(next(RESULTS.glob(f"{notebook}*/metrics.json")).read_text())


def cases() -> dict[str, tuple]:
    """name -> (reading, args, kwargs): every reading on the committed results."""
    m00, m01, m02 = metrics("00"), metrics("01"), metrics("02")
    m03, m04, m05, m06 = metrics("03"), metrics("04"), metrics("05"), metrics("06")
    # Keys that notebook 02 writes since the attention-only measurement; the committed results may predate them.
    m02.setdefault("rendered_attention_miou_by_method", {"argmax": 0.4102, "threshold": 0.3877, "otsu": 0.3611,
                                                         "dcrf": m02["rendered_attention_miou"]})
    m02.setdefault("generated_pseudomask_miou_by_method", {"argmax": 0.4519, "threshold": 0.4044, "otsu": 0.3921,
                                                           "dcrf": m02["generated_pseudomask_miou"]})
    p01, p02 = m01["parameters"], m02["parameters"]
    n = len(m02["steps_used"])
    probe_steps = [m02["steps_used"][k] for k in sorted({0, n // 4, n // 2, 3 * n // 4, n - 1})]  # notebook 01's
    resolutions = [tuple(int(x) for x in k.split("x")) for k in m01["probe_miou_by_resolution_t500"] if "x" in k]
    no_oracle = [{**row, "pseudo_mask_mIoU": None} for row in m03["table5"]]  # a validation set without an oracle
    without_real = [row for row in m06["table3"] if row["method"] != "real-supervised"]  # fgbg_train_set = None
    paper_settings = {"paper_step": readings.PAPER.capture_steps[0], "paper_num_steps": readings.PAPER.num_steps}
    return {
        "world": (readings.world, (m00["world"],), {}),
        "training": (readings.training, (m00["training"],), {}),
        "token_maps": (readings.token_maps, (m01["steps_used"], p01["num_steps"]), paper_settings),
        "token_maps_window": (readings.token_maps, (m02["steps_used"], p02["num_steps"]), paper_settings),
        "by_step_and_resolution": (readings.by_step_and_resolution, (probe_steps, resolutions), {}),
        "probe": (readings.probe, (m01,), {}),
        "probe_without_labels": (readings.probe, ({"steps_used": m01["steps_used"]},), {}),
        "equations": (readings.equations, (p02["beta"], p02["r"], 0.8311,
                                           {"argmax": 0.1243, "threshold": 0.1016, "otsu": 0.1387, "dcrf": 0.1309}), {}),
        "rendered_attention": (readings.rendered_attention, (m02, p02["probe_beta"]),
                               {"paper_beta": readings.PAPER.beta}),
        "generated_pseudomasks": (readings.generated_pseudomasks, (m02, p02["beta"]), {}),
        "without_oracle": (readings.generated_pseudomasks, ({"steps_used": m02["steps_used"]}, 0.2), {}),
        "pseudomask_examples": (readings.pseudomask_examples, ([0.9412, 0.8120, 0.7033, 0.4417, 0.1250],), {}),
        "pseudomask_examples_sd": (readings.pseudomask_examples, (), {"n_images": p02["n_images"]}),
        "table5": (readings.table5, (m03["table5"],), {}),
        "table5_without_oracle": (readings.table5, (no_oracle,), {"toy": False}),
        "variants": (readings.variants, (m03["table5"],), {}),
        "variants_without_oracle": (readings.variants, (no_oracle,), {}),
        "table6": (readings.table6, (m04["table6"],), {}),
        "table6_photographs": (readings.table6, (m04["table6"],), {"toy": False}),
        "nti_examples": (readings.nti_examples, (m04["reconstruction_mse"],), {}),
        "before_after": (readings.before_after, (m05["parameters"].get("instance_prompt", "in sks world"),
                                                 {"before": 61.3, "after": 18.7}), {}),
        "before_after_photographs": (readings.before_after, ("a photo in sks cityscape by a dashboard camera",),
                                     {"toy": False}),
        "table4": (readings.table4, (m05["table4"], len(m05["parameters"]["seeds"])), {}),
        "table1": (readings.table1, (m06["table1"], len(m06["parameters"]["seeds"])), {}),
        "table2": (readings.table2, (m06["table2"],), {"paper_table": paper.TABLE2}),
        "table3": (readings.table3, (m06["table3"],), {"paper_table": paper.TABLE3}),
        "table3_photographs": (readings.table3, (m06["table3"],), {"paper_table": paper.TABLE3, "toy": False}),
        "table3_without_real": (readings.table3, (without_real,), {"paper_table": paper.TABLE3}),
        "training_data": (readings.training_data, (0.8123, m06["parameters"]["beta"], m06["parameters"]["r"], 8,
                                                   {"real-supervised": 0.9312, "attn2mask": 0.8417,
                                                    "attn2mask+BECO": 0.8655}), {}),
    }


CASES = cases()


def leaves(obj, path=()):
    """Paths to every number (not bool) in nested dicts, lists and tuples."""
    if isinstance(obj, dict):
        return [p for k, v in obj.items() for p in leaves(v, (*path, k))]
    if isinstance(obj, (list, tuple)):
        return [p for i, v in enumerate(obj) for p in leaves(v, (*path, i))]
    return [path] if isinstance(obj, (int, float)) and not isinstance(obj, bool) else []


def replaced(obj, path, change):
    """A copy of ``obj`` with ``change`` applied to the number at ``path``."""
    if not path:
        return change(obj)
    head, rest = path[0], path[1:]
    if isinstance(obj, dict):
        return {k: replaced(v, rest, change) if k == head else v for k, v in obj.items()}
    return type(obj)(replaced(v, rest, change) if i == head else v for i, v in enumerate(obj))


def labels(obj) -> set[float]:
    """Numbers an input carries as labels: inside keys and strings, and its containers' sizes."""
    found: set[float] = set()
    if isinstance(obj, dict):
        found.add(float(len(obj)))
        for k, v in obj.items():
            found |= labels(str(k)) | labels(v)
    elif isinstance(obj, (list, tuple)):
        found.add(float(len(obj)))
        for v in obj:
            found |= labels(v)
    elif isinstance(obj, str):
        found |= {float(n.rstrip("%").replace(",", "")) for n in NUMBER.findall(obj)}
    return found


def pieces(text: str) -> list[str]:
    """The text split into alternating prose and numbers (odd positions), references masked."""
    return re.split(f"({NUMBER.pattern})", REFERENCE.sub("§", text))


def moved(base: str, other: str) -> set[int]:
    """Indices (in ``pieces(base)``) of the numbers that differ in ``other`` within unchanged prose."""
    a, b = pieces(base), pieces(other)
    prose_a, prose_b = ([p if i % 2 == 0 else "#" for i, p in enumerate(ps)] for ps in (a, b))
    out = set()
    for tag, i1, i2, j1, _ in difflib.SequenceMatcher(None, prose_a, prose_b, autojunk=False).get_opcodes():
        if tag == "equal":
            out |= {i1 + k for k in range(i2 - i1) if (i1 + k) % 2 == 1 and a[i1 + k] != b[j1 + k]}
    return out


CHANGES = (lambda x: x * 1.1 + 0.013, lambda x: x * 0.5, lambda x: x * 2 + 0.5)
INT_CHANGES = (lambda x: x + 1, lambda x: x * 2 + 3)


@pytest.mark.parametrize("name", sorted(CASES))
def test_every_number_in_a_reading_comes_from_its_inputs(name):
    fn, args, kwargs = CASES[name]
    text = fn(*args, **kwargs)
    assert text.startswith(readings.LEAD) and "nan" not in text.lower().split()
    inputs = {"args": args, "kwargs": kwargs}
    dependent: set[int] = set()
    for path in leaves(inputs):
        value = inputs
        for key in path:
            value = value[key]
        for change in INT_CHANGES if isinstance(value, int) else CHANGES:
            other = replaced(inputs, path, change)
            dependent |= moved(text, fn(*other["args"], **other["kwargs"]))
    allowed = labels(inputs)
    ps = pieces(text)
    typed = [ps[i] for i in range(1, len(ps), 2) if i not in dependent
             and (ps[i].endswith("%") or float(ps[i].replace(",", "")) not in allowed)]
    assert not typed, f"{name}: numbers not formatted from the inputs: {typed}\n{text}"


@pytest.mark.parametrize("name", sorted(CASES))
def test_changing_the_inputs_changes_the_reading(name):
    fn, args, kwargs = CASES[name]
    inputs = {"args": args, "kwargs": kwargs}
    if not leaves(inputs) or name in ("probe_without_labels", "without_oracle"):
        pytest.skip("a reading without numbers")
    other = inputs
    for path in leaves(inputs):
        other = replaced(other, path, lambda x: x + 1 if isinstance(x, int) else x * 0.7 + 0.01)
    assert fn(*other["args"], **other["kwargs"]) != fn(*args, **kwargs)


@pytest.mark.parametrize("name", sorted(CASES))
def test_a_reading_is_a_few_sentences(name):
    fn, args, kwargs = CASES[name]
    text = fn(*args, **kwargs).removeprefix(readings.LEAD)
    assert 1 <= len(SENTENCE_END.split(text)) <= 5, text


def test_a_typed_in_number_is_caught(monkeypatch):
    """The provenance check itself: a reading with a number of its own fails it."""
    original = readings.probe
    monkeypatch.setattr(readings, "probe", lambda m: original(m) + " An all-background guess scores about 0.17.")
    monkeypatch.setitem(CASES, "probe", (readings.probe, (metrics("01"),), {}))
    with pytest.raises(AssertionError, match=r"not formatted from the inputs: \['0.17'\]"):
        test_every_number_in_a_reading_comes_from_its_inputs("probe")


SHOWS = re.compile(r"display\(Markdown\(readings\.(\w+)\(")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_every_figure_and_table_is_followed_by_a_reading(path):
    cells = nbformat.read(path, as_version=4).cells
    makers = [i for i, c in enumerate(cells) if c.cell_type == "code"
              and ("viz.save(" in c.source or "write_table(" in c.source)]
    assert makers, "a notebook without figures or tables?"
    for i in makers:
        tail = cells[i].source.rstrip().splitlines()[-1]
        after = cells[i + 1] if i + 1 < len(cells) else None
        shown = SHOWS.search(tail) or (after is not None and after.cell_type == "code" and SHOWS.search(after.source))
        assert shown, f"cell {i} of {path.name} makes a figure or table but no reading follows it:\n{cells[i].source}"
        assert hasattr(readings, shown.group(1)), f"readings has no {shown.group(1)}"
    last = cells[-1]
    assert last.cell_type == "markdown" and last.source.startswith("## Exercises"), "end with two or three exercises"
    assert 2 <= len(re.findall(r"^\d+\. ", last.source, flags=re.MULTILINE)) <= 3
