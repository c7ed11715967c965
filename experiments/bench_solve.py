r"""Speed of fixed-step solves, forward and gradient, against a hand-written scan.

Problem: a batch of 256 states of size 64, the tanh field
`neuralde.fields.MLP(64, layers=8)` in float32, integrated from t = 0 to 1 in a
fixed number of equal steps with explicit Euler or classical RK4. Each method
computes the loss `mean(y(1)**2)` over the batch and its gradient with respect to
all field parameters (`eqx.filter_value_and_grad`), under `eqx.filter_jit`;
`neuralde` and `diffrax` solve one example and are batched with `jax.vmap`.

Methods:

- `ref_a`: a hand-written `jax.lax.scan` over the steps, written directly with
  `jax.numpy` on the `(256, 64)` batch; each stage uses the layer of its own time,
  `k = clip(floor(8 t + allowance), 0, 7)`, as the field does.
- `ref_b`: the same scan with `jax.checkpoint` around each step.
  The reference of a row is the faster of `ref_a` and `ref_b`.
- `resnet`: `neuralde.resnet(field, y0, layers=steps)` (Euler rows only).
- `solve`: `neuralde.solve(field, y0, steps=steps, solver=..., gradient="discretize")`.
- `diffeqsolve`: `diffrax.diffeqsolve` called directly with `ODETerm(field)`,
  `ConstantStepSize`, `dt0 = 1/steps`, `max_steps=steps` and the default adjoint
  `RecursiveCheckpointAdjoint` (whose checkpoints then cover every step).

Each method is first compiled ahead of time (`.lower(...).compile()`: tracing,
lowering and XLA compilation; its compile time), then run once (the first call is
reported as compile time plus this run), and checked to give the same loss and
gradient as `ref_a` to float32 round-off. After one more untimed warm-up call the
methods are timed interleaved in one process: each repeat runs every method once, in
an order rotated from repeat to repeat, and the tables report medians and the ratio
to the reference. A row gets `--repeats` repeats, or fewer (at least 3) where that
would take much longer than `--budget` seconds.

Run from the repository root (times on 2 CPU cores; `diffeqsolve` with RK4 at 1000
steps dominates):

    python experiments/bench_solve.py                       # ~5 min
    python experiments/bench_solve.py --solvers euler --steps 10 100

The results go to `experiments/results/bench_solve.json`, or to `--out`.
"""

import argparse
import functools
import json
import os
import platform
import statistics
import subprocess
import time
from pathlib import Path

import diffrax as dfx
import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr

import neuralde as nde


BATCH = 256
DIM = 64
LAYERS = 8
DTYPE = jnp.float32
RESULTS = Path(__file__).parent / "results"
SOLVERS = {"euler": dfx.Euler(), "rk4": nde.RK4()}
LOSS_RTOL = 1e-5
GRAD_RTOL = 1e-4
MIN_REPEATS = 3
SLOW_S = 10.0  # seconds: no separate warm-up call for methods this slow


# ---------------------------------------------------------------------------------
# The hand-written reference: the same steps on the whole batch, with jax.numpy.


def ref_layer(t):
    """The layer acting at time `t`, as `neuralde.fields.layer_index` picks it."""
    allowance = 16 * jnp.finfo(DTYPE).eps * LAYERS
    k = jnp.floor(t * LAYERS + allowance).astype(jnp.int32)
    return jnp.clip(k, 0, LAYERS - 1)


def ref_rate(weight, bias, t, h):
    """tanh(W_k h + b_k) for the batch `h` of shape (BATCH, DIM)."""
    k = ref_layer(t)
    return jnp.tanh(h @ weight[k].T + bias[k])


def ref_euler_step(weight, bias, ta, tb, h):
    return h + (tb - ta) * ref_rate(weight, bias, ta, h)


def ref_rk4_step(weight, bias, ta, tb, h):
    dt = tb - ta
    tm = ta + 0.5 * dt
    k1 = ref_rate(weight, bias, ta, h)
    k2 = ref_rate(weight, bias, tm, h + 0.5 * dt * k1)
    k3 = ref_rate(weight, bias, tm, h + 0.5 * dt * k2)
    k4 = ref_rate(weight, bias, tb, h + dt * k3)
    return h + (dt / 6) * (k1 + 2 * k2 + 2 * k3 + k4)


REF_STEPS = {"euler": ref_euler_step, "rk4": ref_rk4_step}


def ref_solve(field, y0, steps, solver, checkpoint):
    weight, bias = field.operator.weight, field.bias
    step = functools.partial(REF_STEPS[solver], weight, bias)

    def body(h, x):
        ta, tb = x
        return step(ta, tb, h), None

    if checkpoint:
        body = jax.checkpoint(body)
    times = jnp.arange(steps + 1, dtype=DTYPE) / steps
    h, _ = jax.lax.scan(body, y0, (times[:-1], times[1:]))
    return h


# ---------------------------------------------------------------------------------
# The methods under test; each maps (field, batch y0) to the final batch state.


def nde_resnet(field, y0, steps):
    return jax.vmap(lambda y: nde.resnet(field, y, layers=steps))(y0)


def nde_solve(field, y0, steps, solver):
    solve = functools.partial(
        nde.solve, field, steps=steps, solver=solver, gradient="discretize"
    )
    return jax.vmap(solve)(y0)


def diffrax_solve(field, y0, steps, solver):
    def one(y):
        sol = dfx.diffeqsolve(
            dfx.ODETerm(field),
            SOLVERS[solver],
            0.0,
            1.0,
            1.0 / steps,
            y,
            stepsize_controller=dfx.ConstantStepSize(),
            max_steps=steps,
        )
        return sol.ys[-1]

    return jax.vmap(one)(y0)


def methods_for(steps, solver):
    """name -> (field, y0) -> batch of final states, for one row of the table."""
    out = {
        "ref_a": functools.partial(
            ref_solve, steps=steps, solver=solver, checkpoint=False
        ),
        "ref_b": functools.partial(
            ref_solve, steps=steps, solver=solver, checkpoint=True
        ),
    }
    if solver == "euler":
        out["resnet"] = functools.partial(nde_resnet, steps=steps)
    out["solve"] = functools.partial(nde_solve, steps=steps, solver=solver)
    out["diffeqsolve"] = functools.partial(diffrax_solve, steps=steps, solver=solver)
    return out


def value_and_grad(final_state):
    """The jitted loss `mean(y(1)**2)` and its gradient in the field's parameters."""

    def loss(field, y0):
        return jnp.mean(final_state(field, y0) ** 2)

    return eqx.filter_jit(eqx.filter_value_and_grad(loss))


# ---------------------------------------------------------------------------------
# Measurement.


def timed_call(fn, field, y0):
    start = time.perf_counter()
    out = jax.block_until_ready(fn(field, y0))
    return time.perf_counter() - start, out


def max_rel_diff(a, b):
    """The largest difference of two gradient PyTrees, relative to the largest entry
    of `b`."""
    leaves_a = jax.tree.leaves(eqx.filter(a, eqx.is_inexact_array))
    leaves_b = jax.tree.leaves(eqx.filter(b, eqx.is_inexact_array))
    diff = max(float(jnp.max(jnp.abs(x - y))) for x, y in zip(leaves_a, leaves_b))
    scale = max(float(jnp.max(jnp.abs(y))) for y in leaves_b)
    return diff / scale


def bench_row(field, y0, steps, solver, repeats, budget):
    fns = {name: value_and_grad(m) for name, m in methods_for(steps, solver).items()}
    compile_s, first_s, outputs = {}, {}, {}
    for name, fn in fns.items():
        start = time.perf_counter()
        fn.lower(field, y0).compile()  # tracing, lowering and XLA compilation
        compile_s[name] = time.perf_counter() - start
        run_s, outputs[name] = timed_call(fn, field, y0)  # reuses the compilation
        first_s[name] = compile_s[name] + run_s

    loss_ref, grad_ref = outputs["ref_a"]
    errors = {}
    for name, (loss, grad) in outputs.items():
        loss_err = abs(float(loss) - float(loss_ref)) / abs(float(loss_ref))
        grad_err = max_rel_diff(grad, grad_ref)
        errors[name] = {"loss": loss_err, "grad": grad_err}
        if not (loss_err <= LOSS_RTOL and grad_err <= GRAD_RTOL):
            raise SystemExit(
                f"{name} disagrees with ref_a at steps={steps}, solver={solver}: "
                f"relative loss error {loss_err:.2e}, gradient error {grad_err:.2e}."
            )

    # One more untimed warm-up call estimates the cost of a repeat; a method whose
    # first run already took long is estimated by that run instead.
    estimate = 0.0
    for name, fn in fns.items():
        run_s = first_s[name] - compile_s[name]
        estimate += run_s if run_s > SLOW_S else timed_call(fn, field, y0)[0]
    n_rep = min(repeats, max(MIN_REPEATS, int(budget / estimate)))

    names = list(fns)
    samples = {name: [] for name in names}
    for r in range(n_rep):
        shift = r % len(names)
        for name in names[shift:] + names[:shift]:
            samples[name].append(timed_call(fns[name], field, y0)[0])

    median = {name: statistics.median(s) for name, s in samples.items()}
    ref_name = min(("ref_a", "ref_b"), key=median.__getitem__)
    return {
        "steps": steps,
        "solver": solver,
        "repeats": n_rep,
        "loss": float(loss_ref),
        "reference": ref_name,
        "median_s": median,
        "ratio_to_ref": {n: m / median[ref_name] for n, m in median.items()},
        "first_call_s": first_s,
        "compile_s": compile_s,
        "first_call_ratio_solve_to_scan": first_s["solve"] / first_s["ref_a"],
        "compile_ratio_solve_to_scan": compile_s["solve"] / compile_s["ref_a"],
        "rel_error_to_ref_a": errors,
        "samples_s": samples,
    }


# ---------------------------------------------------------------------------------
# Report.


def ms(seconds):
    return f"{1e3 * seconds:.2f}"


def ratio_cell(row, name):
    if name not in row["median_s"]:
        return "-"
    return f"{ms(row['median_s'][name])} ({row['ratio_to_ref'][name]:.2f}x)"


def print_tables(rows):
    print("\nForward + gradient, median ms (ratio to the reference):\n")
    print(
        "| steps | solver | ref A (scan) | ref B (ckpt scan) | resnet | solve "
        "| diffeqsolve | repeats |"
    )
    print("|---:|---|---:|---:|---:|---:|---:|---:|")
    for row in rows:
        med = row["median_s"]
        bold = {n: "**" if row["reference"] == n else "" for n in ("ref_a", "ref_b")}
        print(
            f"| {row['steps']} | {row['solver']} "
            f"| {bold['ref_a']}{ms(med['ref_a'])}{bold['ref_a']} "
            f"| {bold['ref_b']}{ms(med['ref_b'])}{bold['ref_b']} "
            f"| {ratio_cell(row, 'resnet')} | {ratio_cell(row, 'solve')} "
            f"| {ratio_cell(row, 'diffeqsolve')} | {row['repeats']} |"
        )
    print("\nThe reference (bold) is the faster of ref A and ref B.")

    print(
        "\nCompile time (tracing, lowering and XLA compilation, measured ahead of "
        "time), and first call (compile time plus the first run), seconds:\n"
    )
    print(
        "| steps | solver | compile: scan (ref A) | ckpt scan (ref B) | resnet "
        "| solve | diffeqsolve | solve / scan | first call: scan | solve "
        "| solve / scan |"
    )
    print("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for row in rows:
        f, c = row["first_call_s"], row["compile_s"]
        resnet = f"{c['resnet']:.2f}" if "resnet" in c else "-"
        print(
            f"| {row['steps']} | {row['solver']} | {c['ref_a']:.2f} "
            f"| {c['ref_b']:.2f} | {resnet} | {c['solve']:.2f} "
            f"| {c['diffeqsolve']:.2f} | {row['compile_ratio_solve_to_scan']:.2f}x "
            f"| {f['ref_a']:.2f} | {f['solve']:.2f} "
            f"| {row['first_call_ratio_solve_to_scan']:.2f}x |"
        )

    errors = [e for row in rows for e in row["rel_error_to_ref_a"].values()]
    loss_err = max(e["loss"] for e in errors)
    grad_err = max(e["grad"] for e in errors)
    print(
        f"\nAgreement with ref A: losses within {loss_err:.1e} (relative), "
        f"gradients within {grad_err:.1e} (relative to the largest entry)."
    )


def git_revision():
    """The commit of the checkout, with "+dirty" for uncommitted changes."""
    root = Path(__file__).parent

    def git(*args):
        return subprocess.run(
            ["git", *args], cwd=root, capture_output=True, text=True
        ).stdout.strip()

    commit = git("rev-parse", "--short", "HEAD")
    return commit + ("+dirty" if git("status", "--porcelain", "--", "..") else "")


def write_json(payload, path):
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(payload, indent=1))
    os.replace(tmp, path)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, nargs="+", default=[10, 100, 1000])
    parser.add_argument(
        "--solvers", nargs="+", default=["euler", "rk4"], choices=["euler", "rk4"]
    )
    parser.add_argument(
        "--repeats",
        type=int,
        default=20,
        help="timed repeats per method, at most (default 20)",
    )
    parser.add_argument(
        "--budget",
        type=float,
        default=60.0,
        help="seconds of timed repeats per row, roughly; fewer "
        f"repeats where they cost more (at least {MIN_REPEATS})",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="the JSON file (default: experiments/results/bench_solve.json)",
    )
    parser.add_argument("--seed", type=int, default=0)
    opts = parser.parse_args()
    if opts.out is None:
        opts.out = RESULTS / "bench_solve.json"

    kf, kb, ky = jr.split(jr.key(opts.seed), 3)
    field = nde.fields.MLP(DIM, layers=LAYERS, dtype=DTYPE, key=kf)
    # A nonzero bias, so that its gradient and the layer choice are both tested.
    field = eqx.tree_at(
        lambda f: f.bias, field, 0.1 * jr.normal(kb, field.bias.shape, DTYPE)
    )
    y0 = jr.normal(ky, (BATCH, DIM), DTYPE)

    load_start = os.getloadavg()
    rows = []
    for steps in opts.steps:
        for solver in opts.solvers:
            start = time.perf_counter()
            rows.append(bench_row(field, y0, steps, solver, opts.repeats, opts.budget))
            print(
                f"steps={steps:5d} {solver:5s}: {time.perf_counter() - start:.1f} s",
                flush=True,
            )

    print_tables(rows)
    write_json(
        {
            "problem": {
                "batch": BATCH,
                "dim": DIM,
                "layers": LAYERS,
                "dtype": jnp.dtype(DTYPE).name,
                "field": "MLP(tanh)",
                "loss": "mean(y(1)**2)",
                "t": [0.0, 1.0],
            },
            "options": {
                "steps": opts.steps,
                "solvers": opts.solvers,
                "repeats": opts.repeats,
                "budget_s": opts.budget,
                "seed": opts.seed,
            },
            "environment": {
                "jax": jax.__version__,
                "diffrax": dfx.__version__,
                "equinox": eqx.__version__,
                "backend": jax.default_backend(),
                "devices": [str(d) for d in jax.devices()],
                "cpu_count": os.cpu_count(),
                "python": platform.python_version(),
                "neuralde": git_revision(),
                "load_average_start_end": [load_start, os.getloadavg()],
            },
            "rows": rows,
        },
        opts.out,
    )
    print(f"\nWrote {opts.out}")


if __name__ == "__main__":
    main()
