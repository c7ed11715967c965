r"""Arbitrarily deep reversible networks (Chang et al. 2018) on the digits.

A convolutional Hamiltonian network classifies the 8 x 8 handwritten digits
(`nde.data.digits()`, stratified split): a conv stem (`nde.nn.ConvBlock`, 1 to $c$
channels) and a 2 x 2 max-pool give a $(c, 4, 4)$ image $h$; the Hamiltonian field
$\dot y = K^\top \tanh(K z + b)$, $\dot z = -K^\top \tanh(K y + b)$, with $K$ a
periodic 3 x 3 convolution, carries $(y, z) = (h, 0)$ from $0$ to $T$ in $L$
symplectic Euler steps (Chang et al.'s Verlet network, one step per layer); a linear
head reads the flattened $y(T)$. The final time is fixed, so $L$ layers are steps of
$T/L$, and a deeper network is a finer discretisation of one continuous model.

The field's kernels are piecewise constant over `param_layers` (16) intervals of
$[0, T]$, however many steps are taken: $L = 1024$ steps are 64 steps per kernel.
Two reasons. The claim under test is about the memory of the *states*, and
per-step kernels would add $O(L)$ parameter memory in every gradient mode (the
parameters, their gradient, the optimiser's state; the run measures the gradient's
accumulator, for the reversible gradient). And with the same parameters at every
depth, the networks of the depth series are discretisations of one model from one
initialisation, so their accuracies differ by the step size alone, not by their
number of parameters (from 9 000 to 600 000).

Gradients come from `gradient="reversible"`: the backward pass rebuilds each state
by running the symplectic Euler steps backwards, so it stores no trajectory.
`nde.solve(..., batched=True)` (through `nde.nn.ODEBlock`) lets that custom VJP see
the whole batch, which is why the model acts on a batch rather than on one image.

Measured:

- memory: XLA's compiled memory analysis of the jitted loss + gradient (temporary
  bytes; batch of `batch_size` images) at depths 16 to 4096, for
  `gradient="reversible"` and `"discretize"` (backpropagation through the stored
  steps), with 16 kernels, and for `"reversible"` with one kernel per step;
- the gradient of the two modes on one batch at $L = 1024$: equal up to round-off;
- test accuracy after training at depths 16, 64, 256 and 1024, with the same
  optimiser and number of steps, and of the stem and head alone (depth 0);
- how far the states rebuilt by running the trained 1024-layer network backwards
  are from the true ones (`nde.stability.reversibility_error`).

**The convolution.** The operator is the periodic convolution of
`nde.operators.Conv` (same weights, initialisation and cross-correlation convention;
the script checks that both agree), computed as a product with its block-circulant
matrix. On XLA's CPU backend, `nde.operators.Conv`'s channels-first
`lax.conv_general_dilated` is slow on these 4 x 4 images: the loss and gradient of
this network at 256 layers took 1.05 s with it and 0.17 s with the matrix product,
and the 1024-layer network would not train in minutes.

    python experiments/deep_reversible.py            # ~6 min on 2 busy CPU cores
    python experiments/deep_reversible.py --quick    # smoke test, seconds

Results: `results.json`, `memory.png` and `accuracy.png` in `--out` (default
`experiments/runs/deep_reversible/`; `--publish` replaces the committed ones in
`experiments/results/deep_reversible/`).
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
from jaxtyping import Array, Float


matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

import neuralde as nde  # noqa: E402


FULL = dict(
    channels=8,
    param_layers=16,
    t1=4.0,
    train_depths=(16, 64, 256, 1024),
    memory_depths=(16, 64, 256, 1024, 4096),
    per_step_kernels=True,
    baseline=True,
    epochs=4,
    batch_size=32,
    lr=1e-2,
)
QUICK = dict(
    channels=4,
    param_layers=2,
    t1=1.0,
    train_depths=(8,),
    memory_depths=(8,),
    per_step_kernels=False,
    baseline=False,
    steps=3,
    batch_size=16,
    lr=1e-2,
)
SOLVER = "symplectic_euler"
IMAGE = (4, 4)  # after the stem's 2 x 2 pool


@functools.cache
def _shifts(height: int, width: int, kh: int, kw: int) -> np.ndarray:
    """`S[p, q]`, the `(h w, h w)` matrix that reads pixel `(i + p - p0, j + q - q0)`
    (periodic) into pixel `(i, j)`: the tap `(p, q)` of a periodic cross-correlation.
    """
    p0, q0 = (kh - 1) // 2, (kw - 1) // 2
    i, j = np.meshgrid(np.arange(height), np.arange(width), indexing="ij")
    rows = (i * width + j).ravel()
    s = np.zeros((kh, kw, height * width, height * width), np.float32)
    for p in range(kh):
        for q in range(kw):
            cols = (((i + p - p0) % height) * width + (j + q - q0) % width).ravel()
            s[p, q, rows, cols] = 1.0
    return s


class CirculantConv(nde.operators.AbstractOperator):
    """The periodic convolution of `nde.operators.Conv`, as a product with its block
    circulant matrix $M_{(o,i,j),(c,i',j')} = \\sum_{p,q} w_{o,c,p,q}
    S^{pq}_{(i,j),(i',j')}$ (one dense matmul per application instead of a
    convolution, which XLA's CPU backend runs slowly on tiny images)."""

    weight: Float[Array, "*layers out_channels in_channels kh kw"]
    shape: tuple[int, int] = eqx.field(static=True)

    def __init__(self, conv: nde.operators.Conv):
        """**Arguments:** `conv`, a periodic `nde.operators.Conv` whose weights and
        image size are taken over."""
        if conv.padding_mode != "CIRCULAR":
            raise ValueError(
                "CirculantConv is the periodic convolution: build the Conv with "
                f"padding_mode='CIRCULAR', got {conv.padding_mode!r}."
            )
        self.weight = conv.weight
        self.shape = conv.shape

    def __call__(self, x):
        out_channels, in_channels, kh, kw = self.weight.shape
        height, width = self.shape
        s = jnp.asarray(_shifts(height, width, kh, kw), self.weight.dtype)
        m = jnp.einsum("ocpq,pqij->oicj", self.weight, s)
        m = m.reshape(out_channels * height * width, in_channels * height * width)
        return (m @ x.reshape(-1)).reshape(out_channels, height, width)

    def in_structure(self):
        return jax.ShapeDtypeStruct(
            (self.weight.shape[-3], *self.shape), self.weight.dtype
        )

    def bias_shape(self):
        return (self.weight.shape[-4], 1, 1)


def conv_operator(channels: int, layers: int, *, key) -> CirculantConv:
    def make(k):
        return CirculantConv(
            nde.operators.Conv(channels, channels, 3, shape=IMAGE, key=k)
        )

    return nde.operators.stack(make, layers=layers, key=key)


def check_operator(channels: int, key) -> float:
    """The largest difference between `CirculantConv` and `nde.operators.Conv` on a
    random image (float32 round-off expected). Their transposes, both derived by
    `jax.linear_transpose`, then agree too."""
    ckey, xkey = jr.split(key)
    conv = nde.operators.Conv(channels, channels, 3, shape=IMAGE, key=ckey)
    x = jr.normal(xkey, (channels, *IMAGE))
    difference = eqx.filter_jit(
        lambda conv, x: jnp.abs(CirculantConv(conv)(x) - conv(x))
    )
    return float(jnp.max(difference(conv, x)))


class DeepHamiltonianCNN(eqx.Module):
    """Conv stem, max-pool, Hamiltonian block on $(h, 0)$, linear head on the
    flattened $y(T)$. Acts on a **batch** of images `(batch, 1, 8, 8)`, so that the
    block's reversible VJP sees the whole batch (`batched=True`); `block=None` is
    the stem and head alone."""

    stem: nde.nn.ConvBlock
    pool: nde.nn.Pool2d
    block: nde.nn.ODEBlock | None
    head: eqx.nn.Linear

    def __init__(self, *, channels, param_layers, depth, t1, gradient, key):
        skey, fkey, hkey = jr.split(key, 3)
        self.stem = nde.nn.ConvBlock(1, channels, key=skey)
        self.pool = nde.nn.Pool2d(2)
        if depth:
            K = conv_operator(channels, param_layers, key=fkey)
            field = nde.fields.Hamiltonian(operator=K, layers=param_layers, t1=t1)
            self.block = nde.nn.ODEBlock(
                field, steps=depth, solver=SOLVER, gradient=gradient, batched=True
            )
        else:
            self.block = None
        self.head = eqx.nn.Linear(channels * IMAGE[0] * IMAGE[1], 10, key=hkey)

    def features(self, x):
        return jax.vmap(lambda x: self.pool(self.stem(x)))(x)

    def __call__(self, x: Float[Array, "batch 1 8 8"]) -> Float[Array, "batch 10"]:
        h = self.features(x)
        if self.block is not None:
            h, _ = self.block((h, jnp.zeros_like(h)))
        return jax.vmap(lambda h: self.head(h.reshape(-1)))(h)


def loss_fn(model, x, y):
    return nde.losses.cross_entropy(model(x), y)


def accuracy(model, x, y):
    return jnp.mean(jnp.argmax(model(x), axis=-1) == y)


def num_params(model) -> int:
    return int(sum(x.size for x in jax.tree.leaves(eqx.filter(model, eqx.is_array))))


def compiled_gradient(model, x, y):
    """The jitted loss + gradient, compiled for these shapes, and its parameters."""
    params, static = eqx.partition(model, eqx.is_array)

    def value_and_grad(params, x, y):
        return jax.value_and_grad(lambda p: loss_fn(eqx.combine(p, static), x, y))(
            params
        )

    return jax.jit(value_and_grad).lower(params, x, y).compile(), params


def measure_memory(cfg, x, y, key) -> tuple[list[dict], dict]:
    """Compiled memory of the gradient at every depth and mode; and, at the deepest
    trained depth, the difference between the reversible and discretised gradients."""
    series = [("reversible", False), ("discretize", False)]
    if cfg["per_step_kernels"]:
        series.append(("reversible", True))
    check_depth = max(cfg["train_depths"])
    rows, grads = [], {}
    for depth in cfg["memory_depths"]:
        for gradient, per_step in series:
            layers = depth if per_step else cfg["param_layers"]
            model = DeepHamiltonianCNN(
                channels=cfg["channels"],
                param_layers=layers,
                depth=depth,
                t1=cfg["t1"],
                gradient=gradient,
                key=key,
            )
            start = time.perf_counter()
            fn, params = compiled_gradient(model, x, y)
            m = fn.memory_analysis()
            rows.append(
                dict(
                    depth=depth,
                    gradient=gradient,
                    param_layers=layers,
                    per_step_kernels=per_step,
                    temp_bytes=int(m.temp_size_in_bytes),
                    argument_bytes=int(m.argument_size_in_bytes),
                    output_bytes=int(m.output_size_in_bytes),
                    compile_s=time.perf_counter() - start,
                )
            )
            print(
                f"memory  L={depth:5d} {gradient:10s} kernels={layers:5d}  "
                f"temp {m.temp_size_in_bytes / 2**20:8.2f} MiB",
                flush=True,
            )
            if depth == check_depth and not per_step:
                grads[gradient] = fn(params, x, y)
    check = {}
    if len(grads) == 2:
        (lr, gr), (ld, gd) = grads["reversible"], grads["discretize"]
        diff = max(
            float(jnp.max(jnp.abs(a - b)))
            for a, b in zip(jax.tree.leaves(gr), jax.tree.leaves(gd))
        )
        scale = max(float(jnp.max(jnp.abs(b))) for b in jax.tree.leaves(gd))
        check = dict(
            depth=check_depth,
            loss_reversible=float(lr),
            loss_discretize=float(ld),
            max_abs_gradient_difference=diff,
            relative_gradient_difference=diff / scale,
        )
    return rows, check


def train(cfg, data, depth, key) -> tuple[DeepHamiltonianCNN, dict]:
    mkey, tkey = jr.split(key)
    model = DeepHamiltonianCNN(
        channels=cfg["channels"],
        param_layers=cfg["param_layers"],
        depth=depth,
        t1=cfg["t1"],
        gradient="reversible",
        key=mkey,
    )
    x_train, y_train = data.train
    if "epochs" in cfg:
        length = dict(epochs=cfg["epochs"])
        total = cfg["epochs"] * (len(x_train) // cfg["batch_size"])
    else:
        length = dict(steps=cfg["steps"])
        total = cfg["steps"]
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
        depth=depth,
        step_size=cfg["t1"] / depth if depth else None,
        parameters=num_params(model),
        train_steps=total,
        train_time_s=seconds,
        # `fit` evaluates on the test set after the last step; nothing is selected
        # on it (no early stopping).
        test_accuracy=history["eval_accuracy"][-1],
        history=dict(
            step=history["step"],
            train_loss=history["train_loss"],
            test_accuracy=history["eval_accuracy"],
        ),
    )
    print(
        f"train   L={depth:5d}  test accuracy {row['test_accuracy']:.4f}  "
        f"({seconds:.1f}s)",
        flush=True,
    )
    return model, row


def rebuild_error(model: DeepHamiltonianCNN, x) -> float:
    """The largest relative error, over the images `x`, of the initial state rebuilt
    by running the trained network's steps backwards."""
    block = model.block
    h = model.features(x)

    def one(h):
        return nde.stability.reversibility_error(
            block.field, (h, jnp.zeros_like(h)), solver=SOLVER, steps=block.steps
        )

    return float(jnp.max(eqx.filter_jit(jax.vmap(one))(h)))


def plot_memory(rows, path):
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    styles = {
        ("discretize", False): ("C3", "s-", "discretize"),
        ("reversible", False): ("C0", "o-", "reversible"),
        ("reversible", True): ("C0", "o--", "reversible, one kernel per step"),
    }
    for (gradient, per_step), (colour, marker, label) in styles.items():
        rs = [
            r
            for r in rows
            if r["gradient"] == gradient and r["per_step_kernels"] == per_step
        ]
        if rs:
            ax.plot(
                [r["depth"] for r in rs],
                [r["temp_bytes"] / 2**20 for r in rs],
                marker,
                color=colour,
                label=label,
            )
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("layers L (symplectic Euler steps)")
    ax.set_ylabel("XLA temporary memory of loss + gradient (MiB)")
    ax.set_title("Memory of the gradient against depth")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, path, dpi=120)
    plt.close(fig)


def plot_accuracy(rows, path):
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    deep = [r for r in rows if r["depth"]]
    base = [r for r in rows if not r["depth"]]
    ax = axes[0]
    ax.plot(
        [r["depth"] for r in deep],
        [r["test_accuracy"] for r in deep],
        "o-",
        label="Hamiltonian CNN",
    )
    for r in base:
        ax.axhline(r["test_accuracy"], color="gray", ls=":", label="stem + head only")
    ax.set_xscale("log", base=2)
    ax.set_ylim(0.9, 1.0)
    ax.set_xlabel("layers L")
    ax.set_ylabel("test accuracy")
    ax.set_title("Accuracy after training (reversible gradient)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax = axes[1]
    for r in rows:
        h = r["history"]
        name = f"L = {r['depth']}" if r["depth"] else "stem + head"
        ax.plot(h["step"], h["train_loss"], label=name)
    ax.set_yscale("log")
    ax.set_xlabel("training step")
    ax.set_ylabel("training loss")
    ax.set_title("Training loss")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
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

    key = jr.PRNGKey(args.seed)
    okey, mkey, tkey = jr.split(key, 3)
    data = nde.data.digits(seed=args.seed)
    operator_error = check_operator(cfg["channels"], okey)
    if not operator_error < 1e-4:
        raise RuntimeError(
            f"CirculantConv differs from nde.operators.Conv by {operator_error:.3g}."
        )

    batch = slice(0, cfg["batch_size"])
    x, y = jnp.asarray(data.x_train[batch]), jnp.asarray(data.y_train[batch])
    memory, gradient_check = measure_memory(cfg, x, y, mkey)

    rows, models = [], {}
    depths = ((0,) if cfg["baseline"] else ()) + tuple(cfg["train_depths"])
    for depth in depths:
        # One key for every depth: the same stem, kernels and head at
        # initialisation, and the same batches; only the step size differs.
        models[depth], row = train(cfg, data, depth, tkey)
        rows.append(row)
    deepest = max(cfg["train_depths"])
    error = rebuild_error(models[deepest], jnp.asarray(data.x_test[:64]))

    results = dict(
        experiment="deep_reversible",
        command="python experiments/deep_reversible.py"
        + (" --quick" if args.quick else ""),
        config=dict(
            cfg,
            seed=args.seed,
            solver=SOLVER,
            operator="CirculantConv (periodic 3x3 convolution of nde.operators.Conv)",
            image_after_stem=IMAGE,
            dtype="float32",
            optimizer="adam, cosine decay to 5% of lr",
        ),
        environment=environment(),
        data=dict(
            name=data.name,
            train=len(data.x_train),
            test=len(data.x_test),
        ),
        operator_max_difference_to_nde_conv=operator_error,
        memory=memory,
        gradient_check=gradient_check,
        training=rows,
        rebuild_relative_error_trained=dict(depth=deepest, images=64, max=error),
        total_time_s=time.perf_counter() - start,
    )
    write_json(out / "results.json", results)
    plot_memory(memory, out / "memory.png")
    plot_accuracy(rows, out / "accuracy.png")
    print(f"wrote {out} in {results['total_time_s']:.0f}s")
    return results


if __name__ == "__main__":
    main()
