r"""Stable architectures at growing depth (Haber & Ruthotto 2017).

Four networks classify two planar problems, the swiss roll (2 classes) and the level
sets of MATLAB's `peaks` (5 classes), at depths from 4 to 1024 layers:

- `ResNet`: the plain residual network, `nde.fields.MLP` under `nde.resnet`
  (explicit Euler, one step per layer), $h_{j+1} = h_j + h\,\tanh(K_j h_j + b_j)$;
- `Antisymmetric`: $\tanh((K_j - K_j^\top - \gamma I) h_j + b_j)$, explicit Euler,
  $\gamma = 0.01$;
- `Hamiltonian`: Chang et al.'s two-stream field, symplectic Euler, both streams
  lifted from the input;
- `Hyperbolic`: $\ddot y = -K^\top \tanh(K y + b)$, leapfrog, zero initial velocity.

The final time is fixed, $T = 4$, so the step is $h = T/L$ for $L$ layers and a deeper
network is a finer discretisation of one continuous model, as in the paper. Every
network has the same state width (4 per stream, lifted from the 2-D input by a
learned linear map; $K$ of the two-stream fields is 8 x 4), a linear read-out, and
the same training budget: Adam with a cosine-decayed learning rate, the same number
of steps and batch size, float32. These are the choices of `neuralde study`. Each
configuration is trained from several seeds (initialisation and batch order; the
data are fixed by `--seed`).

Training is one jitted `lax.scan` over the optimiser steps (as in `neuralde
study`), not `nde.train.fit`: `fit` traces its step once per call, so every seed
would compile again, and compilation would dominate the run; the scan compiles
once per (problem, architecture, depth) and serves every seed.

Measured for every (problem, architecture, depth): train and test accuracy; the norm
of the gradient of the loss with respect to the state after every layer,
$\|\partial L/\partial y_j\|$ (`nde.stability.gradient_norms`, mean over 64 test
points), at initialisation and after training, summarised by the ratio of the first
layer's to the last's; and whether training diverged (a non-finite state, which
`nde.solve` and `nde.resnet` raise, or a non-finite loss).

    python experiments/stable_architectures.py            # ~7 min of CPU time
    python experiments/stable_architectures.py --quick    # smoke test, seconds

Results: `results.json`, `accuracy.png` and `gradient_norms.png` in `--out` (default
`experiments/runs/stable_architectures/`; `--publish` replaces the committed ones in
`experiments/results/stable_architectures/`).
"""

import functools
import time

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import matplotlib
import numpy as np
import optax
from _common import arguments, environment, output, save_figure, write_json


matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

import neuralde as nde  # noqa: E402


DTYPE = jnp.float32
ARCHITECTURES = ("ResNet", "Antisymmetric", "Hamiltonian", "Hyperbolic")
PROBLEMS = {"swiss_roll": nde.data.swiss_roll, "peaks": nde.data.peaks}
FULL = dict(
    problems=("swiss_roll", "peaks"),
    architectures=ARCHITECTURES,
    depths=(4, 16, 64, 256, 1024),
    steps=400,
    seeds=2,
)
# One architecture: building, tracing and compiling each costs seconds.
QUICK = dict(
    problems=("swiss_roll",),
    architectures=("Hamiltonian",),
    depths=(4,),
    steps=4,
    seeds=1,
)
SETTINGS = dict(
    dim=4, width=8, t1=4.0, lr=0.02, batch_size=64, n_train=1024, n_test=1024
)
POINTS = 64  # test points of the gradient-norm profile


class Classifier(eqx.Module):
    """Linear lift of the 2-D input, the network, linear read-out; one example."""

    lift: eqx.nn.Linear
    field: nde.fields.AbstractField
    head: eqx.nn.Linear
    architecture: str = eqx.field(static=True)
    depth: int = eqx.field(static=True)

    def __init__(self, architecture, *, depth, classes, dim, width, t1, key):
        lkey, fkey, hkey = jr.split(key, 3)
        common = dict(layers=depth, t1=t1, dtype=DTYPE, key=fkey)
        if architecture == "ResNet":
            field = nde.fields.MLP(dim, **common)
        elif architecture == "Antisymmetric":
            field = nde.fields.Antisymmetric(dim, **common)
        elif architecture == "Hamiltonian":
            field = nde.fields.Hamiltonian(dim, width, **common)
        elif architecture == "Hyperbolic":
            field = nde.fields.Hyperbolic(dim, width, **common)
        else:
            raise ValueError(f"Unknown architecture {architecture!r}.")
        lifted = 2 * dim if architecture == "Hamiltonian" else dim
        self.lift = eqx.nn.Linear(2, lifted, dtype=DTYPE, key=lkey)
        self.field = field
        self.head = eqx.nn.Linear(dim, classes, dtype=DTYPE, key=hkey)
        self.architecture = architecture
        self.depth = depth

    @property
    def solver(self) -> str:
        return {"Hamiltonian": "symplectic_euler", "Hyperbolic": "leapfrog"}.get(
            self.architecture, "euler"
        )

    def initial_state(self, x):
        h = self.lift(x)
        if self.architecture == "Hamiltonian":
            # With z0 = 0 the first symplectic Euler step would move y by an amount
            # that does not depend on the input; lift both streams instead.
            return tuple(jnp.split(h, 2))
        if self.architecture == "Hyperbolic":
            # v0 = 0 is the hyperbolic network's y_{-1} = y_0 (Haber & Ruthotto).
            return h, jnp.zeros_like(h)
        return h

    def readout(self, y1):
        return self.head(y1[0] if isinstance(y1, tuple) else y1)

    def __call__(self, x):
        y0 = self.initial_state(x)
        if self.solver == "euler":
            y1 = nde.resnet(self.field, y0)  # one explicit Euler step per layer
        else:
            y1 = nde.solve(self.field, y0, steps=self.depth, solver=self.solver)
        return self.readout(y1)


def loss_fn(model, x, y):
    return nde.losses.cross_entropy(jax.vmap(model)(x), y)


@functools.cache
def optimiser(lr: float, steps: int) -> optax.GradientTransformation:
    """Adam with a cosine-decayed learning rate (to 5% of `lr`) over `steps`: one
    object per setting, so that `fit` reuses its compiled step across seeds."""
    return optax.adam(optax.cosine_decay_schedule(lr, steps, alpha=0.05))


@eqx.filter_jit
def measure(model, x_train, y_train, x_test, y_test):
    """Accuracies and the mean gradient-norm profile over the first test points."""

    def accuracy(x, y):
        return jnp.mean(jnp.argmax(jax.vmap(model)(x), axis=-1) == y)

    def profile(x, label):
        def loss(y1):
            return nde.losses.cross_entropy(model.readout(y1), label)

        return nde.stability.gradient_norms(
            model.field,
            model.initial_state(x),
            loss,
            steps=model.depth,
            solver=model.solver,
        )

    norms = jax.vmap(profile)(x_test[:POINTS], y_test[:POINTS])
    return dict(
        train_accuracy=accuracy(x_train, y_train),
        test_accuracy=accuracy(x_test, y_test),
        gradient_norms=jnp.mean(norms, axis=0),
    )


def summarise(norms) -> dict:
    """The profile $\\|\\partial L/\\partial y_j\\|$, j = 0..L, in brief."""
    norms = np.asarray(norms, np.float64)
    return dict(
        first=float(norms[0]),  # at the input of the first layer
        last=float(norms[-1]),  # at the output of the last layer
        ratio_first_to_last=float(norms[0] / norms[-1]),
        min=float(norms.min()),
        max=float(norms.max()),
    )


def run_one(problem, data, architecture, depth, *, steps, key):
    """Train and measure one configuration from one seed."""
    s = SETTINGS
    mkey, tkey = jr.split(key)
    model = Classifier(
        architecture,
        depth=depth,
        classes=data.num_classes,
        dim=s["dim"],
        width=s["width"],
        t1=s["t1"],
        key=mkey,
    )
    arrays = [jnp.asarray(a) for a in data]
    params = sum(x.size for x in jax.tree.leaves(eqx.filter(model, eqx.is_array)))
    start = time.perf_counter()
    before = jax.tree.map(np.asarray, measure(model, *arrays))
    row = dict(
        parameters=int(params),
        init_gradient_norms=summarise(before["gradient_norms"]),
        init_gradient_profile=_thin(before["gradient_norms"]),
    )
    try:
        # Eight records of the training loss, each the mean over an eighth of
        # the steps.
        model, history = nde.train.fit(
            model,
            loss_fn,
            (arrays[0], arrays[1]),
            optimiser(s["lr"], steps),
            key=tkey,
            steps=steps,
            batch_size=s["batch_size"],
            eval_every=max(1, steps // 8),
            progress=False,
        )
        curve = np.asarray(history["train_loss"])
        after = jax.tree.map(np.asarray, measure(model, *arrays))
        finite = np.all(np.isfinite(curve)) and np.all(
            np.isfinite(after["gradient_norms"])
        )
        row.update(
            diverged=not finite,
            train_accuracy=float(after["train_accuracy"]),
            test_accuracy=float(after["test_accuracy"]),
            final_train_loss=float(curve[-1]),
            loss_curve=curve,
            gradient_norms=summarise(after["gradient_norms"]),
            gradient_profile=_thin(after["gradient_norms"]),
        )
    except Exception as e:  # noqa: BLE001 - a diverged run is a result, not a crash
        message = str(e).strip().splitlines()[0][:300]
        row.update(diverged=True, error=message, train_accuracy=0.0, test_accuracy=0.0)
    row["time_s"] = time.perf_counter() - start
    return row


def aggregate(problem, architecture, depth, runs) -> dict:
    """Mean and spread over the seeds of one configuration."""
    acc = np.array([r["test_accuracy"] for r in runs])
    ok = [r for r in runs if not r["diverged"]]
    out = dict(
        problem=problem,
        architecture=architecture,
        depth=depth,
        step_size=SETTINGS["t1"] / depth,
        parameters=runs[0]["parameters"],
        diverged=sum(r["diverged"] for r in runs),
        test_accuracy_mean=float(acc.mean()),
        test_accuracy_std=float(acc.std()),
        train_accuracy_mean=float(np.mean([r["train_accuracy"] for r in runs])),
        init_gradient_ratio_mean=float(
            np.mean([r["init_gradient_norms"]["ratio_first_to_last"] for r in runs])
        ),
    )
    if ok:
        ratios = [r["gradient_norms"]["ratio_first_to_last"] for r in ok]
        out.update(
            gradient_ratio_mean=float(np.mean(ratios)),
            gradient_ratio_max=float(np.max(ratios)),
            gradient_norm_max=float(np.max([r["gradient_norms"]["max"] for r in ok])),
            gradient_norm_min=float(np.min([r["gradient_norms"]["min"] for r in ok])),
        )
    return out


def _thin(norms, most=129):
    """At most `most` entries of the profile (layers j equally spaced), with j."""
    norms = np.asarray(norms)
    index = np.unique(np.linspace(0, norms.size - 1, most).round().astype(int))
    return dict(layer=index, norm=norms[index])


def _find(rows, problem, architecture, depth):
    (row,) = [
        r
        for r in rows
        if r["problem"] == problem
        and r["architecture"] == architecture
        and r["depth"] == depth
    ]
    return row


def plot_accuracy(summary, config, path):
    problems = config["problems"]
    fig, axes = plt.subplots(1, len(problems), figsize=(5 * len(problems), 3.8))
    axes = np.atleast_1d(axes)
    for ax, problem in zip(axes, problems):
        for arch in config["architectures"]:
            rs = [_find(summary, problem, arch, d) for d in config["depths"]]
            ax.errorbar(
                [r["depth"] for r in rs],
                [r["test_accuracy_mean"] for r in rs],
                yerr=[r["test_accuracy_std"] for r in rs],
                fmt="o-",
                capsize=3,
                label=arch,
            )
            for r in rs:
                if r["diverged"]:
                    ax.plot(r["depth"], r["test_accuracy_mean"], "kx", ms=10)
        ax.set_xscale("log", base=2)
        ax.set_xlabel(f"layers L (h = T/L, T = {SETTINGS['t1']:g})")
        ax.set_ylabel(f"test accuracy (mean ± std, {config['seeds']} seeds)")
        ax.set_title(problem)
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
    axes[0].legend()
    fig.tight_layout()
    save_figure(fig, path, dpi=120)
    plt.close(fig)


def plot_gradients(runs, config, path):
    """The profile of the first seed at the largest depth, for each problem."""
    depth = max(config["depths"])
    problems = config["problems"]
    fig, axes = plt.subplots(
        len(problems), 2, figsize=(10, 3.6 * len(problems)), squeeze=False
    )
    for row_axes, problem in zip(axes, problems):
        for ax, which, title in zip(
            row_axes,
            ("init_gradient_profile", "gradient_profile"),
            ("at initialisation", "after training"),
        ):
            for arch in config["architectures"]:
                r = _find(runs, problem, arch, depth)["seeds"][0]
                if which in r:
                    p = r[which]
                    ax.plot(np.asarray(p["layer"]), np.asarray(p["norm"]), label=arch)
            ax.set_yscale("log")
            ax.set_xlabel("layer j")
            ax.set_title(f"{problem}, L = {depth}, {title}")
            ax.grid(alpha=0.3)
        row_axes[0].set_ylabel("||dL/dy_j||, mean over test points")
    axes[0][0].legend()
    fig.tight_layout()
    save_figure(fig, path, dpi=120)
    plt.close(fig)


def table(summary, config) -> str:
    lines = []
    for problem in config["problems"]:
        lines.append(
            f"\n{problem}: test accuracy, mean ± std over {config['seeds']} seeds "
            "[gradient-norm ratio first/last layer after training]"
        )
        head = "| architecture | " + " | ".join(f"L={d}" for d in config["depths"])
        lines += [head + " |", "|---|" + "---:|" * len(config["depths"])]
        for arch in config["architectures"]:
            cells = []
            for d in config["depths"]:
                r = _find(summary, problem, arch, d)
                cell = f"{r['test_accuracy_mean']:.3f} ± {r['test_accuracy_std']:.3f}"
                if "gradient_ratio_mean" in r:
                    cell += f" [{r['gradient_ratio_mean']:.2g}]"
                if r["diverged"]:
                    cell += f" ({r['diverged']} diverged)"
                cells.append(cell)
            lines.append(f"| {arch} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None):
    parser = arguments(__doc__, quick="tiny smoke run")
    parser.add_argument("--seed", type=int, default=0, help="data; first init seed")
    options = parser.parse_args(argv)
    config = dict(QUICK if options.quick else FULL)
    config.update(SETTINGS, seed=options.seed, quick=options.quick, points=POINTS)
    out = output(options, __file__, parser)

    start = time.perf_counter()
    runs, summary = [], []
    for problem in config["problems"]:
        data = PROBLEMS[problem](
            n_train=SETTINGS["n_train"],
            n_test=SETTINGS["n_test"],
            seed=options.seed,
            dtype=np.float32,
        )
        for arch in config["architectures"]:
            for depth in config["depths"]:
                # Seed k: the same initial lift and head, and the same batch order,
                # for every architecture and depth.
                seeds = [
                    run_one(
                        problem,
                        data,
                        arch,
                        depth,
                        steps=config["steps"],
                        key=jr.PRNGKey(options.seed + k),
                    )
                    for k in range(config["seeds"])
                ]
                runs.append(
                    dict(problem=problem, architecture=arch, depth=depth, seeds=seeds)
                )
                row = aggregate(problem, arch, depth, seeds)
                summary.append(row)
                print(
                    f"{problem:10s} {arch:13s} L={depth:5d}  test acc "
                    f"{row['test_accuracy_mean']:.3f} ± {row['test_accuracy_std']:.3f}"
                    + (f"  {row['diverged']} diverged" if row["diverged"] else "")
                    + f"  ({sum(r['time_s'] for r in seeds):.1f}s)",
                    flush=True,
                )
    text = table(summary, config)
    print(text)
    results = dict(
        experiment="stable_architectures",
        config=config,
        environment=environment(),
        summary=summary,
        runs=runs,
        total_time_s=time.perf_counter() - start,
    )
    write_json(out / "results.json", results)
    plot_accuracy(summary, config, out / "accuracy.png")
    plot_gradients(runs, config, out / "gradient_norms.png")
    return results


if __name__ == "__main__":
    main()
