"""The benchmark runner: time and memory of integration and gradient strategies on a
grid of problems, against a hand-written `lax.scan` of the same steps."""

import itertools
import os
import time
from collections.abc import Sequence

import jax
from tqdm.auto import tqdm

from ._bench import _report, _torch
from ._bench._measure import MemoryPool
from ._bench._problem import dtype_note, Point, Problem, skip_reason
from ._bench._registry import (
    ADAPTIVE,
    batching_name,
    BATCHINGS,
    dtype_name,
    field_name,
    FIELDS,
    gradient_name,
    solver_name,
)
from ._bench._report import check_output, environment, write_report
from ._bench._run import run_problem
from ._checks import positive_int
from ._io import jsonable, write_json
from .gradients import GRADIENT_NAMES


AXES = (
    "fields",
    "solvers",
    "gradients",
    "batchings",
    "steps",
    "batch",
    "width",
    "dtypes",
)
# A preset is a union of grids ("blocks"): each block sets some axes, the preset's
# `axes` give the rest, and arguments given explicitly replace an axis everywhere.
PRESETS = {
    # Under three minutes on two shared CPU cores: the overhead of fixed steps, the
    # memory of reversible gradients, and torchdiffeq where installed.
    "quick": dict(
        blocks=[
            dict(fields=["MLP"], solvers=["euler"], gradients=["discretize"]),
            dict(
                fields=["Hamiltonian"],
                solvers=["symplectic_euler"],
                gradients=["discretize", "reversible"],
            ),
        ],
        axes=dict(
            batchings=["batched"],
            steps=[16, 64, 256],
            batch=[64],
            width=[32],
            dtypes=["float32"],
        ),
        # torchdiffeq on one thread: at these sizes its default of one thread per
        # core took 5-40x longer on two shared cores (busy-waiting threads).
        settings=dict(
            layers=8, repeats=100, budget=3.0, memory=True, torch=True, torch_threads=1
        ),
    ),
    # The gradient engine: every mode under both ways of batching, against
    # discretize, at the shape of a typical neural ODE (an 8-layer tanh MLP, state
    # 64, batch 256), 100 and 1000 steps.
    "engine": dict(
        blocks=[dict(solvers=["euler", "rk4", "reversible_heun"])],
        axes=dict(
            fields=["MLP"],
            gradients=list(GRADIENT_NAMES),
            batchings=list(BATCHINGS),
            steps=[100, 1000],
            batch=[256],
            width=[64],
            dtypes=["float32"],
        ),
        settings=dict(
            layers=8,
            repeats=20,
            budget=6.0,
            memory=False,
            torch=False,
            torch_threads=None,
        ),
    ),
    # The full comparison on CPU: every gradient mode, fixed and adaptive steps,
    # dense, convolutional and graph fields; bfloat16 for the dense ones.
    "paper": dict(
        blocks=[
            dict(
                fields=["MLP", "Antisymmetric"],
                solvers=["euler", "rk4", "dopri5"],
                dtypes=["float32", "bfloat16"],
            ),
            dict(
                fields=["Hamiltonian"],
                solvers=["symplectic_euler", "leapfrog"],
                dtypes=["float32", "bfloat16"],
            ),
            dict(
                fields=["ConvParabolic", "GraphParabolic", "GRAND"],
                solvers=["rk4"],
                steps=[16, 128],
            ),
            dict(
                fields=["ConvHamiltonian"],
                solvers=["symplectic_euler"],
                steps=[16, 128],
            ),
        ],
        axes=dict(
            gradients=list(GRADIENT_NAMES),
            batchings=list(BATCHINGS),
            steps=[16, 128, 1024, ADAPTIVE],
            batch=[256],
            width=[64],
            dtypes=["float32"],
        ),
        settings=dict(
            layers=8,
            repeats=20,
            budget=10.0,
            memory=True,
            torch=True,
            torch_threads=None,
        ),
    ),
    # The same on an accelerator, at sizes that occupy it.
    "gpu": dict(
        blocks=[
            dict(fields=["MLP", "Antisymmetric"], solvers=["euler", "rk4", "dopri5"]),
            dict(fields=["Hamiltonian"], solvers=["symplectic_euler", "leapfrog"]),
            dict(
                fields=["ConvParabolic", "GraphParabolic", "GRAND", "Attention"],
                solvers=["rk4"],
                steps=[16, 128, 1024],
            ),
            dict(
                fields=["ConvHamiltonian"],
                solvers=["symplectic_euler"],
                steps=[16, 128, 1024],
            ),
        ],
        axes=dict(
            gradients=list(GRADIENT_NAMES),
            batchings=list(BATCHINGS),
            steps=[16, 128, 1024, ADAPTIVE],
            batch=[1024],
            width=[256],
            dtypes=["float32", "bfloat16"],
        ),
        settings=dict(
            layers=8,
            repeats=20,
            budget=10.0,
            memory=True,
            torch=True,
            torch_threads=None,
        ),
    ),
}
RTOL, ATOL, MAX_STEPS = 1e-5, 1e-6, 4096


def bench(
    *,
    preset: str = "quick",
    fields: str | Sequence[str] | None = None,
    solvers: str | Sequence[str] | None = None,
    gradients: str | Sequence[str] | None = None,
    batchings: str | Sequence[str] | None = None,
    steps: int | str | Sequence[int | str] | None = None,
    batch: int | Sequence[int] | None = None,
    width: int | Sequence[int] | None = None,
    dtypes: str | Sequence[str] | None = None,
    layers: int | None = None,
    repeats: int | None = None,
    budget: float | None = None,
    rtol: float = RTOL,
    atol: float = ATOL,
    max_steps: int = MAX_STEPS,
    memory: bool | None = None,
    torch: bool | None = None,
    torch_threads: int | None = None,
    seed: int = 0,
    out: str | os.PathLike | None = "bench-results",
    force: bool = False,
    progress: bool = True,
) -> dict:
    """Benchmark neuralde's solvers and gradient modes on a grid of problems.

    The grid is field x solver x gradient mode x batching x steps x batch x width
    x dtype. For
    each point, the loss `mean(y(t1)**2)` of a batch solved with `neuralde.solve`
    is jit-compiled twice, as the forward solve and as forward + gradient with
    respect to the field's parameters, and measured:

    - compile time (tracing and lowering, and XLA compilation);
    - forward and forward + gradient time: median, quartiles and range over repeats
        timed with `block_until_ready`, after a warm-up call;
    - XLA's compiled memory analysis: argument, output and temporary bytes;
    - peak memory of one forward + gradient in a fresh process: resident set size,
        and device memory where the backend reports it (`device.memory_stats()`);
    - for adaptive solves, the steps and function evaluations per example.

    Every row also shows the ratio to a reference: a hand-written `jax.lax.scan`
    of the same fixed steps over the whole batch (the faster of a plain scan and
    one that recomputes each step in the backward pass; for an adaptive solve, as
    many fixed steps as it took). The rows of one problem, its reference and, if
    torch and torchdiffeq are installed, `torchdiffeq.odeint` on the same problem,
    are timed interleaved in one process, so that their ratios hold under a varying
    load. Each row also shows its forward + gradient time against
    `"discretize"` with the same batching.

    **Arguments:** (all keyword only)

    - `preset`: `"quick"` (default: a run of under three minutes on two CPU
        cores), `"engine"` (every gradient mode under both batchings against
        `"discretize"`: an 8-layer MLP, state 64, batch 256, 100 and 1000 steps of
        `euler`, `rk4` and `reversible_heun`), `"paper"` (every gradient mode,
        fixed and adaptive steps, dense, convolutional and graph fields, float32
        and bfloat16) or `"gpu"` (the
        same at sizes for an accelerator). The arguments below replace an axis or
        setting of the preset.
    - `fields`: names from `MLP`, `Antisymmetric`, `Hamiltonian`, `Hyperbolic`,
        `Parabolic`, `ConvParabolic`, `ConvHamiltonian`, `GraphParabolic`,
        `GRAND`, `GraphCON`, `Attention` (case ignored).
    - `solvers`: solver names of `neuralde.solve`.
    - `gradients`: any of `"discretize"`, `"checkpoint"`, `"adjoint"`,
        `"reversible"`.
    - `batchings`: how the batch reaches `solve`: `"vmap"` (`jax.vmap` over a
        solve of one example, the custom VJPs then run per example) and/or
        `"batched"` (the batch passed to `solve`, the fast way for every mode).
    - `steps`: numbers of equal steps, or `"adaptive"` (an adaptive solve with
        `rtol`, `atol`; for `tsit5` and `dopri5`).
    - `batch`: batch sizes. `width`: state sizes (channels of the convolutional
        fields, features per node of the graph fields).
    - `dtypes`: any of `"float32"`, `"bfloat16"`, `"float16"`, `"float64"` (the
        last needs `jax_enable_x64`); one the backend cannot run is skipped.
    - `layers`: the fields' number of piecewise-constant layers.
    - `repeats`: timed repeats per function, at most; `budget`: seconds of timed
        repeats per problem, roughly (fewer repeats where they cost more, at
        least 3).
    - `rtol`, `atol`, `max_steps`: of the adaptive solves.
    - `memory`: measure peak memory in a process of its own per row (a few
        seconds each, run while the next problem compiles, never while one is
        timed).
    - `torch`: compare with torchdiffeq where it is installed and the problem has
        a torch version (the dense fields; `euler`, `midpoint`, `heun`, `rk4` with
        fixed steps, adaptive `dopri5`).
    - `torch_threads`: torch's intra-op threads during the comparison (`None`:
        the preset's choice; the quick preset uses 1).
    - `seed`: seeds the parameters and the initial states.
    - `out`: the output directory, for `results.json`, `results.md` and the
        figures `time_vs_steps.png` and `memory_vs_steps.png`; `None` writes
        nothing.
    - `force`: write into `out` even if it is not empty.
    - `progress`: show a progress bar (tqdm, on stderr).

    **Returns:** the results, as written to `results.json`: `config`,
    `environment`, `rows` (one per point; `status` is `"ok"`, `"skipped"` with a
    `note` saying why, or `"failed"`) and `problems` (the reference and the
    torchdiffeq comparison of each problem).

    Unknown names raise a `ValueError` that lists the valid ones. Combinations
    that cannot run, such as reversible gradients of an adaptive solve, are
    skipped with a note.
    """
    start = time.perf_counter()
    config = configure(
        preset=preset,
        fields=fields,
        solvers=solvers,
        gradients=gradients,
        batchings=batchings,
        steps=steps,
        batch=batch,
        width=width,
        dtypes=dtypes,
        layers=layers,
        repeats=repeats,
        budget=budget,
        rtol=rtol,
        atol=atol,
        max_steps=max_steps,
        memory=memory,
        torch=torch,
        torch_threads=torch_threads,
        seed=seed,
    )
    if out is not None:
        out = check_output(out, force)
        out.mkdir(parents=True, exist_ok=True)
    solve_options = dict(rtol=rtol, atol=atol, max_steps=max_steps)
    problems = {}
    for point in config.pop("points"):
        problems.setdefault(point.problem, []).append((point.gradient, point.batching))
    load = [os.getloadavg()] if hasattr(os, "getloadavg") else []
    pool = MemoryPool(_lanes()) if config["memory"] else None
    with _torch.threads(config["torch_threads"] if config["torch"] else None):
        results = dict(
            config=config,
            environment=environment(),
            rows=[],
            problems=[],
            complete=False,
        )
        total = sum(len(g) for g in problems.values())
        try:
            with tqdm(total=total, disable=not progress, unit="point") as bar:
                for problem, grads in problems.items():
                    rows, record = _measure_problem(
                        problem, grads, config, solve_options, bar, pool
                    )
                    results["rows"] += rows
                    results["problems"].append(record)
                    bar.update(len(grads))
                    if out is not None:  # an interrupted run keeps what it measured
                        write_json(out / "results.json", results)
                bar.set_description("peak memory")
                if pool is not None:
                    pool.wait()
        finally:
            if pool is not None:
                pool.close()
    if load:
        load.append(os.getloadavg())
    results["environment"]["load_average_start_end"] = load
    results.update(wall_time=time.perf_counter() - start, complete=True)
    results = jsonable(results)
    if out is not None:
        write_report(out, results)
    return results


def _measure_problem(problem, gradients, config, solve_options, bar, pool):
    def on_row(what):
        bar.set_description(f"{problem.field} {problem.solver} {problem.steps}: {what}")

    note = dtype_note(problem.dtype)
    if note is None:
        return run_problem(
            problem,
            gradients,
            layers=config["layers"],
            seed=config["seed"],
            solve_options=solve_options,
            repeats=config["repeats"],
            budget=config["budget"],
            torch=config["torch"],
            on_row=on_row,
            memory=pool,
        )
    rows = [
        dict(Point(problem, *g).as_dict(), status="skipped", note=note)
        for g in gradients
    ]
    return rows, dict(problem._asdict(), reference=None, torchdiffeq=None)


def summary(results: dict) -> str:
    """The tables of a benchmark's `results` (as `bench` returns them, or as read
    from `results.json`), as the command prints them: one row per measured point,
    the torchdiffeq comparison, and the notes on skipped points."""
    return _report.summary(results)


def _lanes() -> int:
    """Memory workers at a time: one beside the main process on a small CPU, two on
    a larger one; one on an accelerator, which they would share."""
    if jax.default_backend() != "cpu":
        return 1
    return 1 if (os.cpu_count() or 1) <= 3 else 2


def configure(
    *,
    preset="quick",
    fields=None,
    solvers=None,
    gradients=None,
    batchings=None,
    steps=None,
    batch=None,
    width=None,
    dtypes=None,
    layers=None,
    repeats=None,
    budget=None,
    rtol=RTOL,
    atol=ATOL,
    max_steps=MAX_STEPS,
    memory=None,
    torch=None,
    torch_threads=None,
    seed=0,
) -> dict:
    """The validated settings of a benchmark (see `bench`) and its points, with the
    preset's values filled in. Raises `ValueError` for bad arguments; does no
    work."""
    if preset not in PRESETS:
        raise ValueError(f"Unknown preset {preset!r}. Use one of {', '.join(PRESETS)}.")
    spec = PRESETS[preset]
    given = dict(
        fields=_names(fields, field_name, "fields"),
        solvers=_names(solvers, solver_name, "solvers"),
        gradients=_names(gradients, gradient_name, "gradients"),
        batchings=_names(batchings, batching_name, "batchings"),
        steps=_steps(steps),
        batch=_ints(batch, "batch"),
        width=_ints(width, "width"),
        dtypes=_names(dtypes, dtype_name, "dtypes"),
    )
    points = []
    for block in spec["blocks"]:
        axes = {**spec["axes"], **block}
        axes.update({k: v for k, v in given.items() if v is not None})
        grid = itertools.product(*(axes[a] for a in AXES))
        for f, s, g, how, n, b, w, d in grid:
            points.append(Point(Problem(f, s, n, b, w, d), g, how))
    points = list(dict.fromkeys(points))
    settings = dict(spec["settings"])
    for name, value in dict(
        layers=layers,
        repeats=repeats,
        memory=memory,
        torch=torch,
        torch_threads=torch_threads,
    ).items():
        if value is not None:
            settings[name] = value
    # No torchdiffeq stage where torch cannot run: the report says why instead.
    settings["torch_note"] = None
    if settings["torch"] and (missing := _torch.unavailable()) is not None:
        settings["torch"] = False
        settings["torch_note"] = f"torchdiffeq was not compared: {missing}"
    settings["layers"] = positive_int(settings["layers"], "layers")
    settings["repeats"] = positive_int(settings["repeats"], "repeats")
    if settings["torch_threads"] is not None:
        settings["torch_threads"] = positive_int(
            settings["torch_threads"], "torch_threads"
        )
    if budget is not None:
        settings["budget"] = _positive(budget, "budget")
    _positive(rtol, "rtol")
    _positive(atol, "atol")
    positive_int(max_steps, "max_steps")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"`seed` must be a non-negative integer, got {seed!r}.")
    reasons = [skip_reason(p, rtol=rtol) for p in points]
    if all(reasons):
        raise ValueError(
            "Every point of this grid would be skipped, so there is nothing to "
            f"measure: {'; '.join(dict.fromkeys(reasons))}. Change the axes "
            "(`--fields`, `--solvers`, `--gradients`, `--steps`)."
        )
    return dict(
        preset=preset,
        **settings,
        rtol=rtol,
        atol=atol,
        max_steps=max_steps,
        seed=seed,
        about={
            f: FIELDS[f].about for f in dict.fromkeys(p.problem.field for p in points)
        },
        grid=[p.as_dict() for p in points],
        points=points,
    )


def _names(values, lookup, name) -> list[str] | None:
    if values is None:
        return None
    values = [values] if isinstance(values, str) else list(values)
    if not values:
        raise ValueError(f"`{name}` is empty.")
    return list(dict.fromkeys(lookup(v) for v in values))


def _ints(values, name) -> list[int] | None:
    if values is None:
        return None
    if isinstance(values, str) or not isinstance(values, Sequence):
        values = [values]
    if not values:
        raise ValueError(f"`{name}` is empty.")
    return list(dict.fromkeys(positive_int(v, name) for v in values))


def _steps(values) -> list[int | str] | None:
    if values is None:
        return None
    if isinstance(values, str | int):
        values = [values]
    out = []
    for v in values:
        if isinstance(v, str) and v.lower() == ADAPTIVE:
            out.append(ADAPTIVE)
            continue
        try:
            out.append(positive_int(v, "steps"))
        except ValueError:
            raise ValueError(
                f"`steps` must be positive integers or {ADAPTIVE!r}, got {v!r}."
            ) from None
    if not out:
        raise ValueError("`steps` is empty.")
    return list(dict.fromkeys(out))


def _positive(value, name) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise ValueError(f"`{name}` must be a positive number, got {value!r}.")
    return float(value)
