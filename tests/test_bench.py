import json
import statistics

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest
import scipy.integrate

from neuralde._bench import _torch
from neuralde._bench._measure import (
    adaptive_stats,
    MemoryWorker,
    summary,
    time_interleaved,
)
from neuralde._bench._problem import (
    library_forward,
    Point,
    Problem,
    reference_forward,
    REFERENCE_STEPS,
    skip_reason,
)
from neuralde._bench._registry import make_problem
from neuralde._bench._run import memory_job
from neuralde.bench import bench, configure, PRESETS
from neuralde.cli import main


# The quick preset at a tiny size, with adaptive steps added: three points run (an
# MLP with explicit Euler, a Hamiltonian field with symplectic Euler and two gradient
# modes), and the three adaptive ones are skipped, each with its reason.
TINY = dict(
    preset="quick",
    steps=[4, "adaptive"],
    batch=2,
    width=3,
    layers=2,
    repeats=3,
    budget=0.01,
    memory=False,
    torch=False,
    progress=False,
)
RAN = {
    ("MLP", "euler", "discretize"),
    ("Hamiltonian", "symplectic_euler", "discretize"),
    ("Hamiltonian", "symplectic_euler", "reversible"),
}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "results"
    return out, bench(**TINY, out=str(out))


class _Dense:
    """Parameters in the layout of an MLP field, for `_numpy_euler_loss`."""

    def __init__(self, weight, bias):
        self.operator, self.bias = self, bias
        self.weight = weight


def _numpy_euler_loss(field, y0, steps):
    """The benchmark's loss for explicit Euler on an MLP field, in float64 NumPy:
    `y <- y + h tanh(W_k y + b_k)` with `k` the layer of the step's start."""
    w = np.asarray(field.operator.weight, np.float64)
    b = np.asarray(field.bias, np.float64)
    y = np.asarray(y0, np.float64)
    layers = w.shape[0]
    for i in range(steps):
        k = min(i * layers // steps, layers - 1)
        y = y + np.tanh(y @ w[k].T + b[k]) / steps
    return np.mean(y**2)


def test_tiny_grid_runs_skips_and_agrees(tiny):
    out, results = tiny
    rows = results["rows"]
    assert len(rows) == 6
    ran = {
        (r["field"], r["solver"], r["gradient"]) for r in rows if r["status"] == "ok"
    }
    assert ran == RAN
    assert all(r["steps"] == 4 for r in rows if r["status"] == "ok")
    notes = {
        (r["field"], r["gradient"]): r["note"] for r in rows if r["status"] == "skipped"
    }
    assert len(notes) == 3
    assert "no error estimate" in notes["MLP", "discretize"]
    assert "no error estimate" in notes["Hamiltonian", "discretize"]
    assert "no error estimate" in notes["Hamiltonian", "reversible"]

    field, y0 = make_problem("MLP", 3, 2, 2, "float32", key=jr.PRNGKey(0))
    mlp = next(r for r in rows if r["field"] == "MLP" and r["status"] == "ok")
    # float32 against float64 over 4 steps: a few ulps of a loss of order 1.
    assert mlp["loss"] == pytest.approx(_numpy_euler_loss(field, y0, 4), rel=1e-5)
    for r in rows:
        if r["status"] != "ok":
            continue
        # The library and the hand-written scan take the same steps in float32.
        assert r["agreement"]["loss"] < 1e-5 and r["agreement"]["gradient"] < 1e-4
        for stage in ("forward", "forward_gradient"):
            t = r[stage]
            assert t["repeats"] >= 3
            assert t["min_s"] <= t["q1_s"] <= t["median_s"] <= t["q3_s"] <= t["max_s"]
            assert r["overhead"][stage] == pytest.approx(
                t["median_s"] / r["reference"][stage]["median_s"]
            )
            assert r["compile"][stage]["compile_s"] > 0
        # XLA's arguments are exactly the field's parameters and the states.
        params = sum(x.nbytes for x in jax.tree.leaves(field))
        states = 2 * 3 * 4 * (2 if r["field"] == "Hamiltonian" else 1)
        if r["field"] == "MLP":
            assert r["xla_memory"]["forward"]["argument"] == params + states
            assert r["xla_memory"]["forward"]["output"] == states


def test_output_files(tiny):
    out, results = tiny
    names = sorted(p.name for p in out.iterdir())
    assert names == [
        "memory_vs_steps.png",
        "results.json",
        "results.md",
        "time_vs_steps.png",
    ]
    assert json.loads((out / "results.json").read_text()) == results
    assert results["complete"] and results["config"]["layers"] == 2
    env = results["environment"]
    assert env["backend"] == jax.default_backend() and env["device_count"] >= 1
    assert env["jax"] == jax.__version__ and env["cpu"]
    for name in ("time_vs_steps.png", "memory_vs_steps.png"):
        assert (out / name).read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    report = (out / "results.md").read_text()
    assert (
        "| Hamiltonian | symplectic_euler | reversible | batched | 4 | 2 | 3 "
        "| float32 |" in report
    )
    assert (
        "- skipped: symplectic_euler has no error estimate: adaptive steps need "
        "tsit5 or dopri5: Hamiltonian, symplectic_euler, discretize (batched), steps "
        "adaptive; Hamiltonian, symplectic_euler, reversible (batched), steps "
        "adaptive." in report
    )


def _reference_against_solve(solvers, getkey):
    """Hand-written steps against `neuralde.solve` with the same steps, in float64,
    compiled as one function."""
    one = Problem("MLP", "euler", 3, 2, 2, "float64")
    two = Problem("Hamiltonian", "symplectic_euler", 3, 2, 2, "float64")
    cases = {s: two if s in ("symplectic_euler", "leapfrog") else one for s in solvers}
    built = {
        p: make_problem(p.field, p.width, p.batch, 2, p.dtype, key=getkey())
        for p in (one, two)
    }

    @eqx.filter_jit
    def both(built):
        out = {}
        for s, p in cases.items():
            point = Point(p._replace(solver=s), "discretize")
            field, y0 = built[p]
            solve = library_forward(point, rtol=1e-5, atol=1e-6, max_steps=10)
            out[s] = (solve(field, y0), reference_forward(s, 3, False)(field, y0))
        return out

    for s, (a, b) in both(built).items():
        for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
            # The same operations up to their order: float64 round-off.
            np.testing.assert_allclose(x, y, rtol=1e-12, atol=1e-13, err_msg=s)


def test_reference_steps_match_solve(getkey):
    # Euler and symplectic Euler are checked by the tiny grid above; the others, a
    # stage loop and a solver state, here; every solver in the slow test below.
    _reference_against_solve(["rk4", "reversible_heun"], getkey)


@pytest.mark.slow
def test_every_reference_step_matches_solve(getkey):
    _reference_against_solve(list(REFERENCE_STEPS), getkey)


def test_adaptive_stats_count_steps_and_evaluations():
    field, y0 = make_problem("MLP", 3, 2, 1, "float32", key=jr.PRNGKey(1))
    y0 = y0 * jnp.asarray([[1.0], [4.0]], jnp.float32)  # two different solves
    s = adaptive_stats(field, y0, "tsit5", rtol=1e-5, atol=1e-6, max_steps=100)
    assert s["steps_max"] >= s["steps_mean"] >= 1
    # Tsit5 has seven stages, the last one reused as the first of the next step:
    # one evaluation to start, six per attempted step, accepted or rejected.
    assert s["nfe_mean"] == 1 + 6 * s["steps_mean"]
    w = np.asarray(field.operator.weight[0], np.float64)
    b = np.asarray(field.bias[0], np.float64)
    for i in range(2):
        exact = scipy.integrate.solve_ivp(
            lambda t, y: np.tanh(w @ y + b),
            (0.0, 1.0),
            np.asarray(y0[i], np.float64),
            rtol=1e-12,
            atol=1e-12,
        ).y[:, -1]
        # The adaptive solve meets rtol=1e-5 per step; over one unit of time on a
        # field with Lipschitz constant of order 1 the global error stays below 1e-4.
        np.testing.assert_allclose(s["y1"][i], exact, rtol=1e-4, atol=1e-5)


def test_skip_reasons_without_tracing():
    def reason(field, solver, gradient, steps=8, dtype="float32"):
        point = Point(Problem(field, solver, steps, 2, 2, dtype), gradient)
        return skip_reason(point, rtol=1e-5)

    assert reason("MLP", "rk4", "discretize") is None
    assert reason("Hamiltonian", "leapfrog", "reversible") is None
    assert "needs fixed steps" in reason("MLP", "tsit5", "reversible", "adaptive")
    assert "no error estimate" in reason("MLP", "rk4", "discretize", "adaptive")
    assert "of a reversible solver" in reason("MLP", "rk4", "reversible")
    assert "two-stream" in reason("GRAND", "leapfrog", "discretize")
    assert "one-term solver" in reason("Hamiltonian", "symplectic_euler", "adjoint")
    assert "finer than the precision" in reason(
        "MLP", "dopri5", "adjoint", "adaptive", "bfloat16"
    )


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (
            dict(fields="Resnet"),
            "Unknown field 'Resnet'. Use one of Antisymmetric, Attention",
        ),
        (dict(solvers=["rk5"]), "Unknown solver 'rk5'. Use one of euler, midpoint"),
        (dict(gradients="backprop"), "Unknown gradient 'backprop'. Use one of disc"),
        (dict(dtypes="int8"), "Unknown dtype 'int8'. Use one of float32, bfloat16"),
        (
            dict(preset="slow"),
            "Unknown preset 'slow'. Use one of quick, engine, paper, gpu",
        ),
        (dict(steps=[10, "often"]), "positive integers or 'adaptive', got 'often'"),
        (dict(steps=[0]), "positive integers or 'adaptive', got 0"),
        (dict(batch=0), "`batch` must be a positive integer, got 0"),
        (dict(width="8"), "`width` must be a positive integer, got '8'"),
        (dict(fields=[]), "`fields` is empty"),
        (dict(budget=-1), "`budget` must be a positive number, got -1"),
        (dict(seed=-1), "`seed` must be a non-negative integer"),
        (dict(torch_threads=0), "`torch_threads` must be a positive integer"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        configure(**kwargs)


def test_refuses_a_non_empty_directory(tmp_path):
    (tmp_path / "keep.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="not empty"):
        bench(**dict(TINY, fields="MLP"), out=str(tmp_path))
    assert [p.name for p in tmp_path.iterdir()] == ["keep.txt"]


def test_a_grid_of_skipped_points_is_refused(capsys):
    with pytest.raises(ValueError, match="Every point of this grid would be skipped"):
        configure(steps=["adaptive"], solvers=["euler"])
    with pytest.raises(SystemExit) as exit:
        main(["bench", "--steps", "adaptive", "--solvers", "euler"])
    assert exit.value.code == 2
    err = capsys.readouterr().err
    assert "euler has no error estimate: adaptive steps need tsit5 or dopri5" in err


def test_help_shows_the_defaults(capsys):
    with pytest.raises(SystemExit):
        main(["bench", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert (
        "--batch N [N ...] examples per solve (default: the preset's; quick: 64)"
        in (text)
    )
    assert "(default: the preset's; quick: 16, 64, 256)" in text


def test_presets_expand_to_their_grids():
    quick = configure(preset="quick")
    assert len(quick["points"]) == 9 and quick["memory"]
    # torchdiffeq is compared where it can run; elsewhere the report says why.
    assert quick["torch"] == (_torch.unavailable() is None)
    if not quick["torch"]:
        assert quick["torch_note"].startswith("torchdiffeq was not compared: not ")
    assert {p.problem.steps for p in quick["points"]} == {16, 64, 256}
    # An explicit axis replaces that axis in every block of the preset.
    narrowed = configure(preset="quick", steps=[8], fields="hamiltonian")
    assert [
        (p.problem.field, p.problem.solver, p.gradient) for p in narrowed["points"]
    ] == [
        ("Hamiltonian", "euler", "discretize"),
        ("Hamiltonian", "symplectic_euler", "discretize"),
        ("Hamiltonian", "symplectic_euler", "reversible"),
    ]
    paper = configure(preset="paper")
    fields = {p.problem.field for p in paper["points"]}
    assert {"ConvParabolic", "GraphParabolic", "GRAND", "ConvHamiltonian"} <= fields
    assert {p.problem.dtype for p in paper["points"]} == {"float32", "bfloat16"}
    assert set(PRESETS) == {"quick", "engine", "paper", "gpu"}
    # The gradient engine's grid: every mode under both batchings.
    engine = configure(preset="engine")
    assert len(engine["points"]) == 3 * 4 * 2 * 2
    assert {p.batching for p in engine["points"]} == {"vmap", "batched"}
    assert {p.problem.steps for p in engine["points"]} == {100, 1000}


def test_cli_parses_into_bench(monkeypatch, tmp_path, capsys):
    # The command sets this variable for its memory workers: keep it to this test.
    monkeypatch.delenv("XLA_PYTHON_CLIENT_PREALLOCATE", raising=False)
    got = {}

    def fake_bench(**kwargs):
        got.update(kwargs)
        return dict(config=dict(torch_note=None), rows=[], problems=[])

    monkeypatch.setattr("neuralde.bench.bench", fake_bench)
    out = tmp_path / "out"
    args = ["bench", "--preset", "paper", "--fields", "mlp", "Hamiltonian", "--steps"]
    args += ["16", "adaptive", "--gradients", "reversible", "--dtypes", "bfloat16"]
    args += ["--batch", "4", "--width", "8", "--no-memory", "--budget", "0.5"]
    assert main([*args, "--out", str(out), "--no-progress"]) == 0
    assert got == dict(
        preset="paper",
        fields=["MLP", "Hamiltonian"],
        steps=[16, "adaptive"],
        gradients=["reversible"],
        dtypes=["bfloat16"],
        batch=[4],
        width=[8],
        memory=False,
        budget=0.5,
        seed=0,
        out=str(out),
        force=False,
        progress=False,
    )
    assert "Wrote" in capsys.readouterr().out


@pytest.mark.parametrize(
    "args, match",
    [
        (["--fields", "Resnet"], "Unknown field 'Resnet'. Use one of Antisymmetric"),
        (["--solvers", "rk5"], "Unknown solver 'rk5'"),
        (["--gradients", "backprop"], "Unknown gradient 'backprop'"),
        (["--steps", "0"], "positive integer or 'adaptive', got '0'"),
        (["--preset", "slow"], "invalid choice: 'slow'"),
        (["--budget", "-2"], "expected a positive number, got '-2'"),
    ],
)
def test_cli_bad_arguments(tmp_path, capsys, monkeypatch, args, match):
    monkeypatch.delenv("XLA_PYTHON_CLIENT_PREALLOCATE", raising=False)
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as exit_info:
        main(["bench", "--out", str(out), *args])
    assert exit_info.value.code == 2
    assert match in capsys.readouterr().err
    assert not out.exists()


def test_cli_refuses_a_non_empty_directory(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("XLA_PYTHON_CLIENT_PREALLOCATE", raising=False)
    (tmp_path / "keep.txt").write_text("keep me")
    with pytest.raises(SystemExit) as exit_info:
        main(["bench", "--out", str(tmp_path)])
    assert exit_info.value.code == 2
    assert "not empty" in capsys.readouterr().err


def test_interleaved_timing_rotates_and_spares_slow_functions():
    calls = []
    runs = {name: (lambda name=name: calls.append(name)) for name in "abc"}
    samples = time_interleaved(runs, repeats=4, budget=1e9, slow=frozenset("c"))
    # One estimate call each, then each repeat rotated by one; "c" takes part in
    # the first repeats only, as its own budget allows (here: all four).
    assert calls[:3] == ["a", "b", "c"]
    assert calls[3:6] == ["a", "b", "c"] and calls[6:9] == ["b", "c", "a"]
    assert [len(samples[n]) for n in "abc"] == [4, 4, 4]
    few = time_interleaved(runs, repeats=2, budget=1e9)
    assert [len(few[n]) for n in "abc"] == [2, 2, 2]


def test_summary_quartiles():
    s = summary([5.0, 1.0, 4.0, 2.0, 3.0])
    assert (s["min_s"], s["q1_s"], s["median_s"], s["q3_s"], s["max_s"]) == (
        1.0,
        2.0,
        3.0,
        4.0,
        5.0,
    )
    assert s["median_s"] == statistics.median([1, 2, 3, 4, 5]) and s["repeats"] == 5


def test_torch_comparison_is_skipped_cleanly_without_torch(monkeypatch):
    real = _torch.importlib.util.find_spec
    monkeypatch.setattr(
        _torch.importlib.util,
        "find_spec",
        lambda name: None if name in ("torch", "torchdiffeq") else real(name),
    )
    problem = Problem("MLP", "euler", 4, 2, 3, "float32")
    field, y0 = make_problem("MLP", 3, 2, 2, "float32", key=jr.PRNGKey(0))
    runs, note = _torch.runs(problem, field, y0, rtol=1e-5, atol=1e-6, max_steps=10)
    assert runs == {} and note == "not installed: torch, torchdiffeq"
    record = _torch.record(runs, note, {}, {}, [], 1.0)
    assert record == dict(status="skipped", note="not installed: torch, torchdiffeq")
    with _torch.threads(1):  # nothing to set
        pass


def test_torch_comparison_notes_problems_it_cannot_run():
    field, y0 = make_problem("Hamiltonian", 3, 2, 2, "float32", key=jr.PRNGKey(0))
    for problem, note in [
        (
            Problem("GRAND", "euler", 4, 2, 3, "float32"),
            "no torch version of the field",
        ),
        (Problem("Hamiltonian", "leapfrog", 4, 2, 3, "float32"), "has no method"),
        (Problem("MLP", "dopri5", 4, 2, 3, "float32"), "dopri5 adaptively"),
        (Problem("MLP", "euler", 4, 2, 3, "bfloat16"), "not compared in bfloat16"),
    ]:
        assert note in _torch._problem_note(problem)


def test_torch_comparison_matches_neuralde():
    pytest.importorskip("torchdiffeq")
    import torch

    problem = Problem("MLP", "euler", 4, 2, 3, "float32")
    field, y0 = make_problem("MLP", 3, 2, 2, "float32", key=jr.PRNGKey(0))
    runs, note = _torch.runs(problem, field, y0, rtol=1e-5, atol=1e-6, max_steps=10)
    assert note is None and set(runs) == {"odeint", "odeint_adjoint"}
    assert runs["odeint_adjoint"][0] is None  # its forward pass is odeint's
    (y1,) = runs["odeint"][0]()
    value, grads = runs["odeint"][1]()
    adjoint_value, adjoint_grads = runs["odeint_adjoint"][1]()
    # The same Euler steps on the same parameters and states, in float32.
    expected = _numpy_euler_loss(field, y0, 4)
    assert float(value) == pytest.approx(expected, rel=1e-5)
    assert float(adjoint_value) == pytest.approx(expected, rel=1e-5)
    assert float(torch.mean(y1**2)) == pytest.approx(expected, rel=1e-5)
    # Backpropagation through the steps, against central differences of the float64
    # loss (step 1e-6: truncation 1e-12, round-off 1e-10, both far below float32's
    # 1e-6 relative error of the gradient).
    w, b = np.asarray(field.operator.weight), np.asarray(field.bias)
    for got, param in zip(grads, ("weight", "bias")):
        fd = np.zeros(got.shape)
        for index in np.ndindex(got.shape):
            shifted = []
            for sign in (1, -1):
                ww, bb = w.astype(np.float64), b.astype(np.float64)
                (ww if param == "weight" else bb)[index] += sign * 1e-6
                shifted.append(_numpy_euler_loss(_Dense(ww, bb), y0, 4))
            fd[index] = (shifted[0] - shifted[1]) / 2e-6
        np.testing.assert_allclose(got.numpy(), fd, rtol=1e-4, atol=1e-6)
    assert all(bool(torch.isfinite(g).all()) for g in adjoint_grads)

    # The two-stream formula, at two times in different layers.
    two = make_problem("Hamiltonian", 3, 1, 2, "float32", key=jr.PRNGKey(2))[0]
    module = _torch._TorchField.build(torch, two, "Hamiltonian", torch.float32, "cpu")
    y, z = np.float32([[0.1, -0.2, 0.3]]), np.float32([[0.5, 0.4, -0.6]])
    for t in (0.25, 0.75):
        got = module(torch.tensor(t), (torch.tensor(y), torch.tensor(z)))
        want = two(t, (y[0], z[0]), None)
        for g, w in zip(got, want):
            np.testing.assert_allclose(g.detach().numpy()[0], w, rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_memory_worker_measures_a_fresh_process():
    problem = Problem("MLP", "euler", 4, 2, 3, "float32")
    field, y0 = make_problem("MLP", 3, 2, 2, "float32", key=jr.PRNGKey(0))
    job = memory_job(
        Point(problem, "discretize"),
        layers=2,
        seed=0,
        solve_options=dict(rtol=1e-5, atol=1e-6, max_steps=10),
    )
    arrays = [x for x in jax.tree.leaves((field, y0))]
    worker = MemoryWorker()
    try:
        got = worker.measure(job, arrays)
        # A JAX process holds tens of MiB at least, and this one computes nothing
        # larger than a kilobyte.
        assert 2**25 < got["peak_rss_bytes"] < 2**31
        if jax.default_backend() == "cpu":
            assert got["device_peak_bytes"] is None
        bad = dict(job, gradient="reversible")  # euler is not reversible
        with pytest.raises(RuntimeError, match="memory worker failed: ValueError"):
            worker.measure(bad, arrays)
    finally:
        worker.close()
