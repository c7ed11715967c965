"""Time and memory of the gradient modes on a deep Hamiltonian network.

Problem (Chang et al. 2018): a `Hamiltonian` field with streams of 64 and a square
64 x 64 operator, 8 parameter layers, symplectic Euler, a batch of 256, float32,
forward + gradient of a mean-square loss with respect to all parameters, at 100,
1 000 and 10 000 steps. Modes: `"discretize"`, `"checkpoint"` and `"reversible"`,
each one `solve` of the whole batch.

Time: medians over repeats after compilation, all modes of one step count
interleaved in one process. Memory: XLA's compiled `memory_analysis()` (the
temporary buffers of the gradient), and the peak resident set size of one forward +
gradient in a process of its own. Everything is measured by `neuralde.bench`, the
runner behind `neuralde bench`.

Run from the repository root:

    python experiments/bench_reversible.py            # 10-15 minutes on 2 CPU cores
    python experiments/bench_reversible.py --quick    # smoke test, under a minute

Results: `results.json`, `results.md` and the figures `time_vs_steps.png`,
`memory_vs_steps.png` in `--out` (default `experiments/runs/bench_reversible/`;
`--publish` replaces the committed ones in `experiments/results/bench_reversible/`).
"""

from _common import run_bench


SETTINGS = dict(
    fields="Hamiltonian",
    solvers="symplectic_euler",
    gradients=["discretize", "checkpoint", "reversible"],
    steps=[100, 1000, 10000],
    batch=256,
    width=64,
    layers=8,
    repeats=7,
    budget=20.0,
)
QUICK = dict(steps=[10, 100], repeats=3, budget=1.0, memory=False)


def main(argv=None):
    return run_bench(__doc__, __file__, SETTINGS, QUICK, argv)


if __name__ == "__main__":
    main()
