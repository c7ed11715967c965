r"""Digits with PDE-based convolutional networks (Ruthotto & Haber 2020).

Three continuous-time CNNs, each a stable field on the periodic 3 x 3 convolution
$K$ (`nde.operators.Conv`), against a residual CNN, on the 8 x 8 handwritten digits
(`nde.data.digits()`, stratified 80/20 split):

- parabolic: $\dot y = -K^\top \tanh(K y + b)$ (diffusion-like; forward Euler);
- hyperbolic: $\ddot y = -K^\top \tanh(K y + b)$, $\dot y(0) = 0$ (wave-like;
  leapfrog, which is the network $y_{j+1} = 2 y_j - y_{j-1} - h^2 K_j^\top
  \tanh(K_j y_j + b_j)$ of the paper);
- Hamiltonian: $\dot y = K^\top \tanh(K z + b)$, $\dot z = -K^\top \tanh(K y + b)$,
  $z(0) = 0$ (Chang et al. 2018; symplectic Euler);
- ResNet: two pre-activation residual blocks (`nde.nn.ResidualBlock`, the default
  body of `nde.nn.CNN`).

Every model has the same stem, a conv block (`nde.nn.ConvBlock`, 1 to 16 channels)
and a 2 x 2 max-pool, giving a $(16, 4, 4)$ image for the body, and the same head, a
linear map of the flattened image to the ten logits. The continuous bodies solve
their field over $[0, T]$ in `steps` equal steps, with kernels piecewise constant
over `layers` intervals, as `nde.nn.ODEBlock`s. For reference, `nde.nn.CNN` as it
is (the residual body, then group norm, global average pooling and a linear head)
is trained too: on these 4 x 4 maps, averaging the pixels away makes it learn much
more slowly within this budget, which is why the others read the whole image.

All are trained alike with `nde.train.fit`: Adam, a cosine-decayed learning rate,
`epochs` passes over the training set in batches of 64, float32, the same seed.
Measured per model: test accuracy, parameter count and training time (compilation
included). The hyper-parameters ($T$, steps, learning rate, epochs) were chosen on a
validation split of the training set, never on the test set.

    python experiments/digits_pde_cnn.py            # a few minutes on 2 CPU cores
    python experiments/digits_pde_cnn.py --quick    # smoke test, seconds

Results: `results.json` and `accuracy.png` in `--out` (default
`experiments/runs/digits_pde_cnn/`; `--publish` replaces the committed ones in
`experiments/results/digits_pde_cnn/`).
"""

import time

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import matplotlib
import optax
from _common import arguments, environment, output, save_figure, write_json
from jaxtyping import Array, Float


matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

import neuralde as nde  # noqa: E402


MODELS = ("parabolic", "hyperbolic", "hamiltonian", "resnet", "nde.nn.CNN")
SOLVERS = dict(parabolic="euler", hyperbolic="leapfrog", hamiltonian="symplectic_euler")
FULL = dict(
    models=MODELS,
    width=16,
    layers=4,
    steps=4,
    t1=1.0,
    epochs=10,
    batch_size=64,
    lr=1e-2,
)
QUICK = dict(
    models=("hyperbolic",),
    width=4,
    layers=1,
    steps=2,
    t1=1.0,
    train_steps=2,
    batch_size=16,
    lr=1e-2,
)
IMAGE = (4, 4)  # after the stem's 2 x 2 pool


class TwoStream(eqx.Module):
    """A two-stream block as a map of images: $y(0) = h$ and $z(0) = 0$ (the
    velocity, for the hyperbolic field) in, $y(T)$ out."""

    block: nde.nn.ODEBlock

    def __call__(self, h, *, key=None):
        y, _ = self.block((h, jnp.zeros_like(h)))
        return y


def make_body(name: str, cfg: dict, *, key):
    """The middle block of model `name`: `(width, 4, 4)` images to the same."""
    width = cfg["width"]
    if name == "resnet":
        blocks = [nde.nn.ResidualBlock(width, key=k) for k in jr.split(key, 2)]
        return eqx.nn.Sequential(blocks)

    def conv(k):
        return nde.operators.Conv(width, width, 3, shape=IMAGE, key=k)

    K = nde.operators.stack(conv, layers=cfg["layers"], key=key)
    cls = dict(
        parabolic=nde.fields.Parabolic,
        hyperbolic=nde.fields.Hyperbolic,
        hamiltonian=nde.fields.Hamiltonian,
    )[name]
    field = cls(operator=K, layers=cfg["layers"], t1=cfg["t1"])
    block = nde.nn.ODEBlock(field, steps=cfg["steps"], solver=SOLVERS[name])
    return block if name == "parabolic" else TwoStream(block)


class Classifier(eqx.Module):
    """Conv stem, max-pool, body, linear head on the flattened image; one image."""

    stem: nde.nn.ConvBlock
    pool: nde.nn.Pool2d
    body: eqx.Module
    head: eqx.nn.Linear

    def __init__(self, body, *, width: int, key):
        skey, hkey = jr.split(key)
        self.stem = nde.nn.ConvBlock(1, width, key=skey)
        self.pool = nde.nn.Pool2d(2)
        self.body = body
        self.head = eqx.nn.Linear(width * IMAGE[0] * IMAGE[1], 10, key=hkey)

    def __call__(self, x: Float[Array, "1 8 8"], *, key=None) -> Float[Array, " 10"]:
        h = self.body(self.pool(self.stem(x)))
        return self.head(h.reshape(-1))


def make_model(name: str, cfg: dict, *, key):
    bkey, mkey = jr.split(key)
    if name == "nde.nn.CNN":
        return nde.nn.CNN(1, 10, channels=cfg["width"], key=mkey)
    return Classifier(make_body(name, cfg, key=bkey), width=cfg["width"], key=mkey)


def loss_fn(model, x, y):
    return nde.losses.cross_entropy(jax.vmap(model)(x), y)


def accuracy(model, x, y):
    return jnp.mean(jnp.argmax(jax.vmap(model)(x), axis=-1) == y)


def num_params(model) -> int:
    return int(sum(x.size for x in jax.tree.leaves(eqx.filter(model, eqx.is_array))))


def train(name: str, cfg: dict, data, key) -> dict:
    mkey, tkey = jr.split(key)
    model = make_model(name, cfg, key=mkey)
    n = len(data.x_train)
    if "epochs" in cfg:
        length = dict(epochs=cfg["epochs"])
        total = cfg["epochs"] * (n // cfg["batch_size"])
    else:
        length = dict(steps=cfg["train_steps"])
        total = cfg["train_steps"]
    schedule = optax.cosine_decay_schedule(cfg["lr"], total, alpha=0.05)
    start = time.perf_counter()
    model, history = nde.train.fit(
        model,
        loss_fn,
        data,
        optax.adam(schedule),
        key=tkey,
        batch_size=cfg["batch_size"],
        metrics={"accuracy": accuracy},
        progress=False,
        **length,
    )
    seconds = time.perf_counter() - start
    row = dict(
        model=name,
        solver=SOLVERS.get(name),
        parameters=num_params(model),
        train_steps=total,
        train_time_s=seconds,
        # `fit` evaluates on the test set after the last step; nothing is selected
        # on it (no early stopping).
        test_accuracy=history["eval_accuracy"][-1],
        test_loss=history["eval_loss"][-1],
        final_train_loss=history["train_loss"][-1],
        history=dict(
            step=history["step"],
            train_loss=history["train_loss"],
            test_accuracy=history["eval_accuracy"],
        ),
    )
    print(
        f"{name:12s} test accuracy {row['test_accuracy']:.4f}  "
        f"{row['parameters']:6d} parameters  {seconds:6.1f}s",
        flush=True,
    )
    return row


def plot(rows, path):
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    ax = axes[0]
    for i, r in enumerate(rows):
        h = r["history"]
        ax.plot(
            h["step"], h["test_accuracy"], "o-", ms=3, color=f"C{i}", label=r["model"]
        )
    ax.axhline(0.97, color="k", ls=":", lw=1, label="97%")
    ax.set_xlabel("training step")
    ax.set_ylabel("test accuracy")
    ax.set_ylim(
        max(0.0, min(min(r["history"]["test_accuracy"]) for r in rows) - 0.02), 1.0
    )
    ax.set_title("Test accuracy during training")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax = axes[1]
    names = [r["model"] for r in rows]
    acc = [r["test_accuracy"] for r in rows]
    bars = ax.barh(names, acc, color=[f"C{i}" for i in range(len(rows))])
    labels = [
        f"{a:.3f}  ({r['parameters']} params, {r['train_time_s']:.0f}s)"
        for a, r in zip(acc, rows)
    ]
    ax.bar_label(bars, labels=labels, padding=3, fontsize=8)
    ax.set_xlim(0, 1.45)
    ax.set_xticks([0.0, 0.2, 0.4, 0.6, 0.8, 1.0])
    ax.invert_yaxis()
    ax.set_xlabel("test accuracy")
    ax.set_title("Final test accuracy")
    fig.tight_layout()
    save_figure(fig, path, dpi=120)
    plt.close(fig)


def main(argv=None):
    parser = arguments(__doc__, quick="tiny smoke run")
    parser.add_argument("--seed", type=int, default=0, help="split, init, batches")
    args = parser.parse_args(argv)
    cfg = dict(QUICK if args.quick else FULL)
    if args.quick:
        # A smoke test is dominated by XLA compilation, which this shortens.
        jax.config.update("jax_disable_most_optimizations", True)
    out = output(args, __file__, parser)
    start = time.perf_counter()

    data = nde.data.digits(seed=args.seed)
    key = jr.PRNGKey(args.seed)
    # Every model gets the same key: the same stem and head initialisation, and
    # the same batches.
    rows = [train(name, cfg, data, key) for name in cfg["models"]]
    continuous = [r for r in rows if r["solver"] is not None]
    best = max(continuous, key=lambda r: r["test_accuracy"])
    results = dict(
        experiment="digits_pde_cnn",
        command="python experiments/digits_pde_cnn.py"
        + (" --quick" if args.quick else ""),
        config=dict(
            cfg,
            seed=args.seed,
            image_after_stem=IMAGE,
            dtype="float32",
            optimizer="adam, cosine decay to 5% of lr",
        ),
        environment=environment(),
        data=dict(name=data.name, train=len(data.x_train), test=len(data.x_test)),
        models=rows,
        best_continuous=dict(
            model=best["model"],
            test_accuracy=best["test_accuracy"],
            target=0.97,
            target_met=bool(best["test_accuracy"] >= 0.97),
        ),
        total_time_s=time.perf_counter() - start,
    )
    write_json(out / "results.json", results)
    plot(rows, out / "accuracy.png")
    print(f"wrote {out} in {results['total_time_s']:.0f}s")
    return results


if __name__ == "__main__":
    main()
