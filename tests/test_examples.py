"""The examples in examples/ run as documented and show what they claim."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).parent.parent / "examples"


@pytest.fixture(scope="module")
def run_example():
    cache = {}

    def run(name):
        if name not in cache:
            env = {**os.environ, "OMP_NUM_THREADS": "1"}
            proc = subprocess.run([sys.executable, str(EXAMPLES / name)], capture_output=True,
                                  text=True, timeout=300, env=env)
            assert proc.returncode == 0, proc.stderr[-2000:]
            cache[name] = proc.stdout
        return cache[name]

    return run


def test_every_example_is_covered():
    assert sorted(p.name for p in EXAMPLES.glob("*.py")) == [
        "own_training_loop.py", "select_for_your_module.py"]


def test_own_training_loop_drops_irrelevant_inputs(run_example):
    out = run_example("own_training_loop.py")
    assert "zero frac" in out
    used = int(out.split("reads ")[1].split(" of")[0])
    accuracy = float(out.split("accuracy ")[1].split(";")[0])
    assert used < 32 and accuracy > 0.9


def test_selector_on_your_own_module_meets_the_target(run_example):
    out = run_example("select_for_your_module.py")
    assert "converged=True" in out and "first-order conditions" in out
    total = next(line for line in out.splitlines() if line.startswith("all"))
    assert abs(float(total.split()[-1]) - 0.85) <= 0.01
