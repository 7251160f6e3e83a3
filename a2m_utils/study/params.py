"""The notebooks' parameters, checked before any work: one rule (a JSON Schema) per parameter name.

Each notebook calls ``check(globals(), "<notebook>")`` right after its parameters cell. It checks every
parameter of that cell (as papermill reads it) against its rule, and every name papermill injected
(``-p NAME VALUE``) against the notebook's parameters, so a misspelt name fails at once instead of
being ignored. Each failure is one line naming the parameter and what it takes. A parameter whose
default is None also takes None.
"""

from __future__ import annotations

import ast
import difflib
from collections.abc import Iterable, Mapping
from functools import cache
from typing import Any

import jsonschema
import papermill as pm

from .report import REPO

NOTEBOOKS = REPO / "notebooks"
FORMATS = jsonschema.FormatChecker()
# JSON Schema counts 2.0 as an integer; a parameter that counts takes a Python int (and never a bool)
_Validator = jsonschema.validators.extend(jsonschema.Draft202012Validator, type_checker=(
    jsonschema.Draft202012Validator.TYPE_CHECKER.redefine(
        "integer", lambda _, x: isinstance(x, int) and not isinstance(x, bool))))


@FORMATS.checks("dataset", raises=ValueError)
def _dataset(spec: str) -> bool:
    from .combination import parse_set  # the registry's names and seg_data's readers: the study's own parser

    return bool(parse_set(spec))


@FORMATS.checks("scheduler")
def _scheduler(name: str) -> bool:
    import diffusers

    cls = getattr(diffusers, name, None) if name.endswith("Scheduler") else None
    return isinstance(cls, type) and issubclass(cls, diffusers.SchedulerMixin)


@FORMATS.checks("protocol", raises=(ValueError, TypeError))
def _protocol(spec: str | dict) -> bool:
    from ..protocol import protocol

    return bool(protocol(spec))


@FORMATS.checks("device", raises=RuntimeError)
def _device(name: str) -> bool:
    import torch

    return bool(torch.device(name))


# The rules' builders: each returns a JSON Schema whose description says what it takes.
def integer(minimum: int = 0, maximum: int | None = None) -> dict:
    top = {} if maximum is None else {"maximum": maximum}
    return {"type": "integer", "minimum": minimum, **top,
            "description": f"an integer {f'from {minimum} to {maximum}' if top else f'>= {minimum}'}"}


def number(minimum: float = 0, maximum: float | None = None, positive: bool = False) -> dict:
    low = {"exclusiveMinimum": minimum} if positive else {"minimum": minimum}
    top = {} if maximum is None else {"maximum": maximum}
    what = f"from {minimum} to {maximum}" if top else f"{'>' if positive else '>='} {minimum}"
    return {"type": "number", **low, **top, "description": f"a number {what}"}


def text(what: str = "a non-empty string", fmt: str | None = None) -> dict:
    return {"type": "string", "minLength": 1, **({"format": fmt} if fmt else {}), "description": what}


def choice(values: Iterable[str]) -> dict:
    values = sorted(values)
    return {"enum": values, "description": "one of " + ", ".join(map(repr, values))}


def list_of(item: dict, min_items: int = 1) -> dict:
    return {"type": "array", "items": item, "minItems": min_items,
            "description": f"a list{' (possibly empty)' if not min_items else ''}, each item {item['description']}"}


def optional(schema: dict) -> dict:
    return {"anyOf": [{"type": "null"}, schema], "description": f"None or {schema['description']}"}


@cache
def rules() -> dict[str, dict]:
    """Parameter name -> its rule, in every notebook (choices from the registry, plugins loaded)."""
    from .. import registry
    from ..masks import METHODS
    from ..protocol import PROTOCOLS
    from .combination import KINDS

    registry.load_plugins()
    count, fraction = integer(1), number(0, 1)
    dataset = text(f"a dataset: one of {', '.join(map(repr, sorted(registry.DATASETS)))}, or '<kind>:<path>' with kind "
                   f"one of {', '.join(KINDS)}", "dataset")
    counts = dict.fromkeys(("n_images", "n_stats", "n_val", "n_train", "n_target", "n_rendered", "n_probe", "n_show",
                            "batch_size", "train_batch_size", "seg_batch_size", "lora_batch_size", "nti_batch_size",
                            "lora_rank", "num_steps", "nti_steps", "inner_steps", "seg_steps", "lora_steps",
                            "oracle_steps"), count)
    return counts | {
        "seed": integer(0), "train_steps": integer(0), "capture_step": integer(0), "max_objects": integer(1, 3),
        "n_real": count, "beco_steps": optional(count), "image_size": count,
        "capture_steps": {"anyOf": [integer(0), list_of(integer(0), 2) | {"maxItems": 2}],
                          "description": "a step index or [first, last + 1]"},
        "seeds": list_of(integer(0)), "sizes": list_of(count), "beco_sizes": list_of(count),
        "fgbg_sizes": list_of(count), "probe_timesteps": list_of(integer(0, 999)),
        "guidance_scale": number(0), "seg_lr": number(0, positive=True), "lora_lr": number(0, positive=True),
        "beta": fraction, "r": fraction, "probe_beta": fraction, "compare_betas": list_of(fraction),
        "preset": choice(registry.PRESETS), "prompt_set": choice(registry.PROMPT_SETS),
        "fgbg_prompt_set": choice(registry.PROMPT_SETS), "segmenter": choice(registry.SEGMENTERS),
        "seg_optimizer": choice(("adam", "sgd")), "method": choice(METHODS), "seg_augmentation": {
            "type": "boolean", "description": "True or False"},
        "model": text("a pipeline folder or hub id"), "coco_captions": text("a JSON file"),
        "scheduler": text("a diffusers scheduler class name, e.g. 'DDIMScheduler'", "scheduler"),
        "device": text("a torch device, e.g. 'cpu' or 'cuda'", "device"),
        "train_set": dataset, "val_set": dataset, "target_set": dataset, "fgbg_val_set": dataset,
        "fgbg_train_set": optional(dataset), "prompts": list_of(text(), 0), "instance_prompt": text(),
        "out_dir": text("a folder"),
        "seg_protocol": {"type": ["string", "object"], "format": "protocol", "description": (
            f"one of {', '.join(map(repr, sorted(PROTOCOLS)))} or a mapping of protocol.Protocol's fields")},
    }


def declared(notebook: str) -> dict[str, Any]:
    """A notebook's parameters and their defaults, as papermill reads its parameters cell."""
    found = pm.inspect_notebook(NOTEBOOKS / f"{notebook}.ipynb")
    return {name: ast.literal_eval(p["default"]) for name, p in found.items()}


def injected() -> set[str]:
    """The names papermill injected into this kernel: its "# Parameters" cell, from IPython's input history."""
    from IPython import get_ipython

    shell = get_ipython()
    history = shell.user_ns.get("In", []) if shell else []
    cell = next((s for s in reversed(history) if s.startswith("# Parameters\n")), "")
    return {t.id for node in ast.parse(cell).body if isinstance(node, ast.Assign) for t in node.targets
            if isinstance(t, ast.Name)}


def unknown(names: Iterable[str], notebook: str, parameters: Iterable[str]) -> list[str]:
    """One line for each of ``names`` that is not one of the notebook's ``parameters``."""
    parameters = sorted(parameters)
    return [f"{n}: not a parameter of {notebook}"
            + "".join(f" (did you mean {m}?)" for m in difflib.get_close_matches(n, parameters, 1))
            + f"; its parameters: {', '.join(parameters)}" for n in sorted(set(names) - set(parameters))]


def problems(values: Mapping[str, Any], notebook: str, given: Iterable[str]) -> list[str]:
    """One line per bad parameter: ``given`` names the notebook lacks, then each parameter whose value (from
    ``values``, else its default) its rule refuses."""
    defaults = declared(notebook)
    lines = unknown(given, notebook, defaults)
    for name, default in defaults.items():
        rule, value = rules()[name] if default is not None else optional(rules()[name]), values.get(name, default)
        if not _Validator(rule, format_checker=FORMATS).is_valid(value):
            lines.append(f"{name} = {value!r}: {name} takes {rule['description']}")
    return lines


def check(values: Mapping[str, Any], notebook: str, given: Iterable[str] | None = None) -> None:
    """Raise ValueError, one line per bad parameter, unless every parameter of ``notebook`` in ``values`` (a
    notebook's ``globals()``) meets its rule and every ``given`` name (default: papermill's injected ones) is
    one of them."""
    lines = problems(values, notebook, injected() if given is None else given)
    if lines:
        raise ValueError("\n".join(lines))
