"""Every experiment script runs end to end with `--quick`, and writes its results.

Each run is a fresh process that imports JAX and compiles its models (10-20 s of
CPU), so these tests are marked `slow`: `python -m pytest -m slow
tests/test_experiments.py` runs them, as CI does in a step of its own.
"""

import json
import math
import os
import pathlib
import subprocess
import sys

import pytest


EXPERIMENTS = pathlib.Path(__file__).parent.parent / "experiments"
QUICK = sorted(
    p.name
    for p in EXPERIMENTS.glob("*.py")
    if not p.name.startswith("_") and "--quick" in p.read_text()
)


def finite_numbers(value):
    """Every number in a JSON value (None stands for a non-finite float)."""
    if isinstance(value, dict):
        return all(finite_numbers(v) for v in value.values())
    if isinstance(value, list):
        return all(finite_numbers(v) for v in value)
    if isinstance(value, float):
        return math.isfinite(value)
    return True


@pytest.mark.slow
@pytest.mark.parametrize("script", QUICK)
def test_quick_run(script, tmp_path):
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    out = subprocess.run(
        [sys.executable, str(EXPERIMENTS / script), "--quick", "--out", str(tmp_path)],
        env=env,
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr[-4000:]
    results = json.loads((tmp_path / "results.json").read_text())
    assert results and finite_numbers(results)
    assert list(tmp_path.glob("*.png")), "no plots written"
