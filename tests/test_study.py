import json
import subprocess
import sys

import jax.random as jr
import numpy as np
import pytest

import neuralde as nde
from neuralde._study._experiments import EXAMPLE_WEIGHTS
from neuralde._study._problems import make_problem
from neuralde.cli import main


FIGURES = (
    "accuracy.png",
    "gradient_norms.png",
    "spectra.png",
    "trajectories.png",
    "do_vs_od.png",
)


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    """One quick study through the function, with a learning rate for Hamiltonian so
    large that its training diverges (Adam's first step moves every weight by about
    1e38, and the next forward pass overflows float32)."""
    out = tmp_path_factory.mktemp("study") / "results"
    lr = {"Hamiltonian": 1e38}
    results = nde.study.study(quick=True, lr=lr, out=str(out), progress=False)
    return out, results


@pytest.mark.slow
def test_quick_study_writes_report(quick):
    out, results = quick
    saved = json.loads((out / "results.json").read_text())
    assert saved == json.loads(json.dumps(results))
    assert {"config", "architectures", "runs", "example_2d", "do_vs_od"} <= set(saved)
    assert saved["complete"] is True
    assert saved["config"]["architectures"] == ["MLP", "Hamiltonian"]
    assert saved["config"]["depths"] == [4, 16]
    assert [(r["architecture"], r["depth"]) for r in saved["runs"]] == [
        ("MLP", 4),
        ("MLP", 16),
        ("Hamiltonian", 4),
        ("Hamiltonian", 16),
    ]
    for name in FIGURES:
        data = (out / name).read_bytes()
        assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 5000, name
    # Every file was renamed into place: no temporary file is left.
    assert sorted(p.name for p in out.iterdir()) == sorted(
        (*FIGURES, "report.md", "results.json")
    )
    report = (out / "report.md").read_text()
    for name in FIGURES:
        assert f"]({name})" in report
    assert "| MLP | 16 | 16 | 0." in report


@pytest.mark.slow
def test_diverged_run_is_reported_and_the_study_goes_on(quick):
    out, results = quick
    report = (out / "report.md").read_text()
    for run in results["runs"]:
        depth = run["depth"]
        if run["architecture"] == "Hamiltonian":
            assert run["status"] == "diverged"
            assert run["diverged_at"] in (1, 2)
            assert "non-finite" in run["message"] or "loss" in run["message"]
            assert "test_accuracy" not in run
            row = f"| Hamiltonian | {depth} | {depth} | — | — | — | — | — | — | — |"
            assert row in report
        else:
            assert run["status"] == "ok"
            assert 0 <= run["test_accuracy"] <= 1
            assert len(run["gradient_norms"]) == depth + 1
            assert np.all(np.asarray(run["sigma_max"]) > 0)
    assert report.count("**diverged**") == 2


@pytest.mark.slow
def test_example_2d_flow_sensitivity(quick):
    _, results = quick
    example = results["example_2d"]
    grid = results["config"]["grid"]
    center = grid * grid // 2  # the origin, an odd lattice's middle point
    for name, weight in EXAMPLE_WEIGHTS.items():
        # At the origin the state stays at 0 and tanh' = 1: the flow's Jacobian is
        # (I + 0.1 W)^20 exactly. float32, 20 steps: rtol 1e-5.
        jacobian = np.linalg.matrix_power(np.eye(2) + 0.1 * np.asarray(weight), 20)
        expected = np.linalg.norm(jacobian, 2)
        sigma = example[name]["sigma_max"]
        np.testing.assert_allclose(sigma[center], expected, rtol=1e-5)
    # Rotation: sigma_max(I + 0.1 W) = sqrt(1.01) per layer at the origin; tanh' < 1
    # elsewhere keeps M near 1.
    assert 1.0 < example["rotation"]["sigma_max_median"] < 1.5
    assert example["contracting"]["sigma_max_max"] < 1
    assert example["expanding"]["sigma_max_median"] > 1
    assert example["expanding"]["sigma_max_max"] > 10


@pytest.mark.slow
def test_do_vs_od_converges(quick):
    _, results = quick
    dood = results["do_vs_od"]
    assert dood["steps"] == [4, 16]
    for name, (coarse, fine) in dood["relative_error"].items():
        # RK4 with parameters constant in time: both gradients approximate the
        # continuous one to O(h^4), so their difference falls by about 4^4 = 256 from
        # 4 to 16 steps; at least 100 for these coarse steps.
        assert fine < coarse / 100, name


@pytest.mark.slow
def test_cli_quick_and_force(tmp_path):
    out = tmp_path / "results"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    # --quick, narrowed to one run: the function's quick study is tested above.
    command = [
        sys.executable,
        "-m",
        "neuralde.cli",
        "study",
        "--quick",
        "--no-progress",
    ]
    command += ["--architectures", "mlp", "--depths", "4", "--out", str(out)]
    refused = subprocess.run(command, capture_output=True, text=True)
    assert refused.returncode == 2
    assert "not empty" in refused.stderr and "--force" in refused.stderr
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]

    done = subprocess.run([*command, "--force"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "| MLP | 4 | 4 | 0." in done.stdout
    assert (out / "notes.txt").read_text() == "keep me"
    results = json.loads((out / "results.json").read_text())
    assert results["config"]["quick"] and results["config"]["epochs"] == 2
    assert [r["status"] for r in results["runs"]] == ["ok"]
    assert (out / "report.md").stat().st_size > 0


def test_refuses_a_non_empty_directory(tmp_path):
    (tmp_path / "old.txt").write_text("")
    with pytest.raises(FileExistsError, match="not empty.*force=True"):
        nde.study.study(quick=True, out=str(tmp_path), progress=False)
    with pytest.raises(FileExistsError, match="is a file"):
        nde.study.study(quick=True, out=str(tmp_path / "old.txt"), progress=False)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (
            dict(architectures=["MLP", "ResNet"]),
            "Unknown architecture 'ResNet'. Valid architectures: Antisymmetric, "
            "Hamiltonian, Hyperbolic, MLP, Parabolic",
        ),
        (dict(problem="moons"), "Unknown problem 'moons'. Valid problems: ellipses, "),
        (dict(lr={"Resnet": 0.1}), "Valid architectures"),
        (dict(architectures=[]), "`architectures` is empty"),
        (dict(depths=[]), "`depths` is empty"),
        (dict(depths=[4, 0]), "`depths` must be at least 1"),
        (dict(depths=[4, 16], steps=24), "multiple of every depth"),
        (dict(epochs=0), "`epochs` must be at least 1"),
        (dict(lr=-1.0), "`lr` must be positive"),
        (dict(t1={"MLP": 0.0}), "`t1` must be positive, got 0.0 for MLP"),
    ],
)
def test_bad_arguments(tmp_path, kwargs, match):
    out = tmp_path / "out"
    with pytest.raises(ValueError, match=match):
        nde.study.study(quick=True, out=str(out), progress=False, **kwargs)
    assert not out.exists()  # rejected before any work


@pytest.mark.parametrize(
    "args, match",
    [
        (["--architectures", "MLP", "ResNet"], "Valid architectures: Antisymmetric, "),
        (["--problem", "moons"], "Valid problems: ellipses, swiss_roll"),
        (["--depths", "4", "x"], "expected a positive integer"),
        (["--lr", "MLP=fast"], "expected a number or NAME=NUMBER"),
        (["--depths", "4", "16", "--steps", "24"], "multiple of every depth"),
    ],
)
def test_cli_bad_arguments(tmp_path, capsys, args, match):
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as exit_info:
        main(["study", "--out", str(out), *args])
    assert exit_info.value.code == 2
    assert match in capsys.readouterr().err
    assert not out.exists()


def test_problems_are_seeded():
    a = make_problem("ellipses", train=100, test=50, seed=3)
    b = make_problem("Ellipses", train=100, test=50, seed=3)
    c = make_problem("ellipses", train=100, test=50, seed=4)
    np.testing.assert_array_equal(a.x_train, b.x_train)
    assert not np.array_equal(a.x_train, c.x_train)
    for name in ("ellipses", "swiss_roll", "swiss-roll"):
        p = make_problem(name, train=400, test=200, seed=0)
        assert p.x_train.shape == (400, 2) and p.x_test.shape == (200, 2)
        assert p.x_train.dtype == np.float32 and p.y_train.dtype == np.int32
        # Both classes are well represented.
        assert 0.3 < p.y_train.mean() < 0.7
        assert np.all(np.abs(p.x_train) < 1.2)


def test_the_study_trains_through_fit_and_compiles_a_network_once():
    """A second training of one architecture and depth (another seed) reuses fit's
    compiled step."""
    from neuralde import study as study_module
    from neuralde.train import _fit

    data = make_problem("ellipses", train=64, test=32, seed=0)
    records = []
    for seed in (0, 1):
        before = _fit._TRACES["train_step"]
        record, _ = study_module._run(
            "Hyperbolic", 3, 3, 1.0, 1e-2, 2, data, jr.PRNGKey(seed), _NoBar()
        )
        records.append((record, _fit._TRACES["train_step"] - before))
    (first, first_traces), (second, second_traces) = records
    assert first["status"] == second["status"] == "ok"
    assert len(first["loss"]) == 2 and first["loss"] != second["loss"]
    assert (first_traces, second_traces) == (1, 0)


class _NoBar:
    def set_postfix_str(self, text):
        pass
