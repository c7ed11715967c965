"""Speed of fixed-step solves, forward and gradient, against a hand-written scan.

Problem: a batch of 256 states of size 64, the tanh field
`neuralde.fields.MLP(64, layers=8)` in float32, integrated from t = 0 to 1 in 10,
100 or 1000 equal steps of explicit Euler or classical RK4, with the gradient of
`mean(y(1)**2)` with respect to the field's parameters by `"discretize"`
(backpropagation through the steps) and `"checkpoint"` (binomial checkpointing).
The reference is a hand-written `jax.lax.scan` of the same steps over the batch, the
faster of a plain scan and one with `jax.checkpoint` around each step; torchdiffeq
is timed on the same problem where installed. Everything is measured by
`neuralde.bench`, the runner behind `neuralde bench`.

Run from the repository root:

    python experiments/bench_solve.py            # 10-15 minutes on 2 CPU cores
    python experiments/bench_solve.py --quick    # smoke test, under a minute

Results: `results.json`, `results.md` and the figures `time_vs_steps.png`,
`memory_vs_steps.png` in `--out` (default `experiments/runs/bench_solve/`;
`--publish` replaces the committed ones in `experiments/results/bench_solve/`).
"""

from _common import run_bench


SETTINGS = dict(
    fields="MLP",
    solvers=["euler", "rk4"],
    gradients=["discretize", "checkpoint"],
    steps=[10, 100, 1000],
    batch=256,
    width=64,
    layers=8,
    repeats=15,
    budget=20.0,
    torch_threads=1,
)
QUICK = dict(steps=[10, 100], repeats=3, budget=1.0, memory=False, torch=False)


def main(argv=None):
    return run_bench(__doc__, __file__, SETTINGS, QUICK, argv)


if __name__ == "__main__":
    main()
