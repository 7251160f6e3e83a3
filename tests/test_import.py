"""``import a2m_utils`` loads none of the kit's modules, and so no model library: each public name loads its
module on first use and keeps its meaning (``a2m.trace`` the function, though ``a2m_utils.trace`` is also a
module). Checked in a fresh interpreter."""

import json
import subprocess
import sys

HEAVY = ["torch", "diffusers", "transformers", "peft", "segmentation_models_pytorch"]


def _fresh(code: str) -> dict:
    return json.loads(subprocess.run([sys.executable, "-c", f"import json, sys\nHEAVY = {HEAVY}\n{code}"],
                                     capture_output=True, text=True, check=True).stdout)


def test_importing_the_kit_loads_no_model_library():
    got = _fresh("import a2m_utils\n"
                 "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in HEAVY + ['a2m_utils'])))")
    assert got == ["a2m_utils"]


def test_each_name_loads_its_module_on_first_use_and_keeps_its_meaning():
    got = _fresh("import importlib, a2m_utils as a2m\n"
                 "vocab = a2m.VOC.names[1]\n"
                 "light = sorted(m for m in HEAVY if m in sys.modules)\n"
                 "importlib.import_module('a2m_utils.trace'), importlib.import_module('a2m_utils.fast')\n"
                 "names = {n: getattr(a2m, n).__module__ + '.' + getattr(a2m, n).__name__ for n in a2m.__all__\n"
                 "         if n not in ('VOC', 'CITYSCAPES')}\n"
                 "print(json.dumps({'vocab': vocab, 'light': light, 'names': names}))")
    assert got["vocab"] == "aeroplane" and got["light"] == []  # a vocabulary needs no torch
    assert got["names"]["trace"] == "a2m_utils.trace.trace" and got["names"]["fast"] == "a2m_utils.fast.fast"
    assert got["names"]["load_pipeline"] == "a2m_utils.registry.load_pipeline"
    assert all(path.endswith("." + name) for name, path in got["names"].items())
