"""Train a Hamiltonian network on a synthetic two-spirals classification problem.

The network follows Chang et al. (2018) and Haber & Ruthotto (2017): a learned linear
lift takes each 2-D point to the first stream ``y0`` of a two-stream Hamiltonian field
(the second stream starts at ``z0 = 0``), the field is integrated with symplectic Euler
using one step per layer, and a linear classifier reads the final ``y``. Gradients are
taken by backpropagation through the solver steps (``gradient="discretize"``).

The data (two interleaved noisy spirals) are generated here from ``--seed``, which
also seeds the initialisation and the minibatch order, so a run is reproducible. It
runs in well under a minute on two CPU cores in float32 and prints the test
accuracy at the end.

Run it from the repository root with

    python experiments/train_hamiltonian.py            # under a minute
    python experiments/train_hamiltonian.py --quick    # a smoke run, seconds

or, for example, ``python experiments/train_hamiltonian.py --epochs 100 --seed 1
--layers 16``. It trains with `neuralde.train.fit`, and writes `results.json` and
`spirals.png` to `--out` (default `experiments/runs/train_hamiltonian/`).
"""

import time

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import optax
from _common import arguments, command, environment, output, save_figure, write_json

import neuralde as nde


def two_spirals(n: int, *, noise: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """`n` points of two interleaved spirals in 2-D and their labels (0 or 1)."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, size=n)
    # Radius grows with the angle; the second spiral is the first turned by pi.
    angle = np.sqrt(rng.uniform(0.0, 1.0, size=n)) * 4.0 * np.pi
    radius = angle / (4.0 * np.pi)
    angle = angle + np.pi * labels
    points = radius[:, None] * np.stack([np.cos(angle), np.sin(angle)], axis=1)
    points = points + noise * rng.normal(size=points.shape)
    return points.astype(np.float32), labels.astype(np.int32)


class HamiltonianClassifier(eqx.Module):
    """Lift -> Hamiltonian network -> linear classifier, for one example."""

    lift: eqx.nn.Linear
    field: nde.fields.Hamiltonian
    classifier: eqx.nn.Linear
    steps: int = eqx.field(static=True)

    def __init__(self, *, dim, width, layers, t1, key):
        k_lift, k_field, k_out = jr.split(key, 3)
        self.lift = eqx.nn.Linear(2, dim, key=k_lift)
        self.field = nde.fields.Hamiltonian(
            dim, width, layers=layers, t1=t1, dtype=jnp.float32, key=k_field
        )
        self.classifier = eqx.nn.Linear(dim, 2, key=k_out)
        self.steps = layers

    def __call__(self, x):
        y0 = self.lift(x)
        y1, _ = nde.solve(
            self.field,
            (y0, jnp.zeros_like(y0)),
            steps=self.steps,
            solver="symplectic_euler",
            gradient="discretize",
        )
        return self.classifier(y1)


def loss_fn(model, x, labels):
    logits = jax.vmap(model)(x)
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()


@eqx.filter_jit
def accuracy(model, x, labels):
    logits = jax.vmap(model)(x)
    return jnp.mean(jnp.argmax(logits, axis=-1) == labels)


def main(argv=None):
    parser = arguments(__doc__, quick="2 epochs on 400 points: a smoke run")
    parser.add_argument("--epochs", type=int, default=60, help="passes over the data")
    parser.add_argument("--seed", type=int, default=0, help="data, init and batches")
    parser.add_argument("--layers", type=int, default=16, help="layers = solver steps")
    parser.add_argument("--dim", type=int, default=4, help="size of each stream")
    parser.add_argument("--width", type=int, default=16, help="rows of K")
    parser.add_argument("--t1", type=float, default=4.0, help="final time")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=1e-2)
    parser.add_argument("--train", type=int, default=2000, help="training points")
    parser.add_argument("--test", type=int, default=1000, help="test points")
    args = parser.parse_args(argv)
    if args.quick:
        args.epochs, args.train, args.test = 2, 400, 200
    out = output(args, __file__, parser)

    start = time.perf_counter()
    x, labels = two_spirals(args.train + args.test, noise=0.04, seed=args.seed)
    train = (x[: args.train], labels[: args.train])
    test = (x[args.train :], labels[args.train :])

    model_key, fit_key = jr.split(jr.PRNGKey(args.seed))
    model = HamiltonianClassifier(
        dim=args.dim, width=args.width, layers=args.layers, t1=args.t1, key=model_key
    )
    steps = args.epochs * (args.train // args.batch_size)
    optimiser = optax.adam(optax.cosine_decay_schedule(args.lr, steps, alpha=0.05))
    model, history = nde.train.fit(
        model,
        loss_fn,
        train,
        optimiser,
        key=fit_key,
        epochs=args.epochs,
        batch_size=args.batch_size,
        eval_data=test,
        metrics={"accuracy": accuracy},
    )
    test_acc = float(accuracy(model, *test))
    print(f"test accuracy: {test_acc:.4f}  ({time.perf_counter() - start:.1f}s)")
    write_json(
        out / "results.json",
        dict(
            command=command(__file__, args),
            config=vars(args) | {"out": str(out)},
            environment=environment(),
            test_accuracy=test_acc,
            history=history,
            wall_time=time.perf_counter() - start,
        ),
    )
    save_figure(figure(model, test, history), out / "spirals.png", dpi=110)
    print(f"Wrote {out}/results.json and spirals.png.")


def figure(model, test, history):
    """The trained classifier's decision regions with the test points, and the
    training loss and test accuracy per epoch."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 4.2), layout="constrained")
    left, right = fig.subplots(1, 2)
    line = np.linspace(-1.2, 1.2, 121, dtype=np.float32)
    grid = np.stack(np.meshgrid(line, line), -1).reshape(-1, 2)
    predicted = np.asarray(jnp.argmax(jax.vmap(model)(grid), axis=-1))
    left.contourf(
        line, line, predicted.reshape(line.size, line.size), levels=[-0.5, 0.5, 1.5],
        colors=["C0", "C1"], alpha=0.25,
    )  # fmt: skip
    x, labels = test
    for k in (0, 1):
        left.plot(*x[labels == k].T, ".", c=f"C{k}", ms=3, label=f"spiral {k}")
    left.set_aspect("equal")
    left.set_xlabel("x₁")
    left.set_ylabel("x₂")
    left.set_title("decision regions and test points", fontsize="medium")
    left.legend(fontsize="small", loc="upper right")
    epochs = np.arange(1, len(history["train_loss"]) + 1)
    right.plot(epochs, history["train_loss"], "o-", ms=3, label="training loss")
    right.plot(epochs, history["eval_accuracy"], "s-", ms=3, label="test accuracy")
    right.set_xlabel("epoch")
    right.xaxis.get_major_locator().set_params(integer=True)
    right.set_ylim(0, max(1.05, max(history["train_loss"]) * 1.05))
    right.grid(alpha=0.3)
    right.legend(fontsize="small")
    right.set_title("training", fontsize="medium")
    return fig


if __name__ == "__main__":
    main()
