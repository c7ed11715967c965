"""Every experiment script answers `--help` without running, takes the options
of `experiments/_common.py`, and runs end to end with `--quick`, writing its
results where it is told and nowhere else.

The end-to-end runs are fresh processes that import JAX and compile their models
(10-20 s of CPU each), so they are marked `slow`: `python -m pytest -m slow
tests/test_experiments.py` runs them.
"""

import json
import math
import os
import pathlib
import subprocess
import sys

import pytest


EXPERIMENTS = pathlib.Path(__file__).parent.parent / "experiments"
SCRIPTS = sorted(p.name for p in EXPERIMENTS.glob("*.py") if not p.name.startswith("_"))
ENV = {**os.environ, "JAX_PLATFORMS": "cpu"}

# Each script's `main(["--help"])`, in one process: argparse prints the help and
# exits before any work.
HELP = """
import contextlib, io, json, runpy, sys
sys.path.insert(0, sys.argv[1])
helps = {}
for name in sys.argv[2:]:
    module = runpy.run_path(f"{sys.argv[1]}/{name}", run_name="experiment")
    text = io.StringIO()
    with contextlib.redirect_stdout(text):
        try:
            module["main"](["--help"])
        except SystemExit as e:
            helps[name] = (e.code, text.getvalue())
        else:
            helps[name] = ("returned", text.getvalue())
print(json.dumps(helps))
"""


def tree(path: pathlib.Path) -> dict:
    return {p: p.stat().st_mtime_ns for p in path.rglob("*") if p.is_file()}


def test_every_experiment_answers_help_without_running():
    committed = tree(EXPERIMENTS / "results")
    runs = tree(EXPERIMENTS / "runs") if (EXPERIMENTS / "runs").exists() else {}
    out = subprocess.run(
        [sys.executable, "-c", HELP, str(EXPERIMENTS), *SCRIPTS],
        env=ENV,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    helps = json.loads(out.stdout.splitlines()[-1])
    assert sorted(helps) == SCRIPTS
    for name, (code, text) in helps.items():
        assert code == 0 and text.startswith("usage:"), name
        for option in ("--quick", "--out", "--force", "--publish"):
            assert option in text, (name, option)
    # Nothing was written, committed or not.
    assert tree(EXPERIMENTS / "results") == committed
    now = tree(EXPERIMENTS / "runs") if (EXPERIMENTS / "runs").exists() else {}
    assert now == runs


def test_the_output_rule(tmp_path, monkeypatch):
    sys.path.insert(0, str(EXPERIMENTS))
    try:
        import _common
    finally:
        sys.path.remove(str(EXPERIMENTS))
    monkeypatch.setattr(_common, "RESULTS", tmp_path / "results")
    monkeypatch.setattr(_common, "RUNS", tmp_path / "runs")

    def output(*args):
        parser = _common.arguments("An experiment.", quick="a smoke run")
        return _common.output(parser.parse_args(args), "/x/demo.py", parser)

    # By default a fresh, git-ignored directory of the script's name.
    assert output() == tmp_path / "runs" / "demo"
    (tmp_path / "runs" / "demo" / "results.json").write_text("{}")
    with pytest.raises(SystemExit):
        output()  # not empty: refused
    assert output("--force") == tmp_path / "runs" / "demo"
    given = tmp_path / "mine"
    assert output("--out", str(given), "--quick") == given and given.is_dir()
    # Only --publish writes the committed results, and only for a full run.
    (tmp_path / "results" / "demo").mkdir(parents=True)
    (tmp_path / "results" / "demo" / "results.json").write_text("{}")
    assert output("--publish") == tmp_path / "results" / "demo"
    for args in (("--publish", "--quick"), ("--publish", "--out", str(given))):
        with pytest.raises(SystemExit):
            output(*args)


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
@pytest.mark.parametrize("script", SCRIPTS)
def test_quick_run(script, tmp_path):
    committed = tree(EXPERIMENTS / "results")
    out = subprocess.run(
        [sys.executable, str(EXPERIMENTS / script), "--quick", "--out", str(tmp_path)],
        env=ENV,
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr[-4000:]
    assert tree(EXPERIMENTS / "results") == committed
    results = json.loads((tmp_path / "results.json").read_text())
    assert results and finite_numbers(results)
    assert list(tmp_path.glob("*.png")), "no plots written"
