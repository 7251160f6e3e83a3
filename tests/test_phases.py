"""The phase timer charges time to the innermost phase and reaches the runner's record from a kernel."""

import json
import subprocess
import sys
from types import SimpleNamespace

import pytest

from a2m_utils import phases
from a2m_utils.study.runner import phase_table, timed_phases


@pytest.fixture
def clock(monkeypatch):
    """A fake clock: wall time as set, CPU time half of it; fresh totals."""
    now = [0.0]
    monkeypatch.setattr(phases, "time", SimpleNamespace(perf_counter=lambda: now[0], process_time=lambda: now[0] / 2))
    monkeypatch.setattr(phases, "totals", {})
    return now


def test_time_goes_to_the_innermost_phase(clock, tmp_path, monkeypatch):
    monkeypatch.setenv(phases.ENV, str(tmp_path / "phases.json"))
    with phases.phase("outer"):
        clock[0] += 1
        with phases.phase("inner"):
            clock[0] += 2
        clock[0] += 4
    assert phases.totals == {"outer": {"wall_s": 5.0, "cpu_s": 2.5, "calls": 1},
                             "inner": {"wall_s": 2.0, "cpu_s": 1.0, "calls": 1}}
    assert json.loads((tmp_path / "phases.json").read_text()) == phases.totals


def test_a_decorated_function_that_raises_is_charged_and_closed(clock):
    @phases.phase("work")
    def work():
        clock[0] += 3
        raise ValueError("bad input")

    with pytest.raises(ValueError, match="bad input"):
        work()
    clock[0] += 10  # outside any phase: charged to none
    with phases.phase("work"):
        pass
    assert phases.totals["work"] == {"wall_s": 3.0, "cpu_s": 1.5, "calls": 2}


def test_the_runner_collects_a_child_process_phases_and_the_rest():
    code = "from a2m_utils.phases import phase\nwith phase('generation'):\n    sum(range(10**6))\n"
    with timed_phases() as totals:
        subprocess.run([sys.executable, "-c", code], check=True)
    assert set(totals) == {"generation"} and totals["generation"]["calls"] == 1
    table = phase_table(totals, 100.0)
    assert table["other"]["wall_s"] == pytest.approx(100.0 - totals["generation"]["wall_s"], abs=0.06)
