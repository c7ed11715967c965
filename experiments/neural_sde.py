r"""Noise in the dynamics of a ResNet, and ensembles over it (Wang et al. 2018).

Wang, Yuan, Shi & Osher, "ResNets ensemble via the Feynman–Kac formalism to improve
natural and robust accuracies" (NeurIPS 2019; arXiv 1811.10745, 2018) read a ResNet
as a transport equation and add a diffusion: the network becomes the SDE
$dy = F(t, y)\,dt + \sigma\,dW$, trained with the noise, and it predicts by averaging
the softmax of several noise samples (their ensemble over Brownian paths). Their
claim: the noise and the average improve accuracy under adversarial attack. (Their
image experiments combine this with adversarial training; this script trains on
clean data only, to isolate the effect of the noise.)

Here, on a planar problem (`nde.data.moons`, 1024 training and 1024 test points,
noise 0.1):

- the model is a learned linear lift of the 2-D input to 8 channels, the ResNet
  field `nde.fields.MLP` ($\tanh(K_j y + b_j)$, 16 layers over $[0, 1]$), and a
  linear read-out. The SDE is integrated with diffrax: `diffrax.MultiTerm` of the
  drift `ODETerm` and `ControlTerm(diffusion, VirtualBrownianTree(...))`, the
  diffusion the diagonal $\sigma I$ (`lineax.DiagonalLinearOperator`, diffrax's way
  of writing diagonal noise), by Euler–Maruyama (`diffrax.Euler`) with one step per
  layer: a ResNet with Gaussian noise of variance $\sigma^2 h$ added after every
  layer. With $\sigma = 0$ it is the deterministic ResNet, trained the same way.
- One model per $\sigma \in \{0, 0.5, 1\}$ and seed (two seeds), trained by
  `nde.train.fit` (Adam, cosine-decayed learning rate, 600 steps of 128 points)
  with a loss that takes a `key`, so that each step sees fresh noise.
- Prediction averages the softmax over 16 noise samples.
- Robustness: test accuracy when every test point is moved by $\epsilon$ in each
  coordinate, (a) in random directions (random signs), and (b) in the direction of
  the sign of the gradient of the loss (FGSM, Goodfellow et al. 2015). For the
  noisy models the gradient is that of the loss of the averaged prediction, over 16
  noise samples of its own (expectation over transformation, Athalye et al. 2018),
  so that the noise does not merely hide the gradient; the attacked points are then
  classified with fresh noise.

`nde.solve` integrates ODEs only, so the SDE is solved with diffrax directly.

    python experiments/neural_sde.py            # ~2-3 min on 2 CPU cores
    python experiments/neural_sde.py --quick    # smoke test, seconds

Results: `results.json` and `robustness.png` in `--out` (default
`experiments/runs/neural_sde/`; `--publish` replaces the committed ones in
`experiments/results/neural_sde/`).
"""

import time

import diffrax as dfx
import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import lineax as lx
import matplotlib
import numpy as np
import optax
from _common import arguments, environment, output, save_figure, write_json


matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

import neuralde as nde  # noqa: E402


DTYPE = jnp.float32
FULL = dict(
    sigmas=(0.0, 0.5, 1.0),
    seeds=2,
    steps=600,
    samples=16,
    epsilons=(0.0, 0.05, 0.1, 0.15, 0.2, 0.3, 0.4),
    n_train=1024,
    n_test=1024,
)
QUICK = dict(
    sigmas=(0.5,),
    seeds=1,
    steps=2,
    samples=2,
    epsilons=(0.0, 0.1),
    n_train=256,
    n_test=64,
)
SETTINGS = dict(dim=8, layers=16, t1=1.0, lr=1e-2, batch_size=128, data_noise=0.1)


class NoisyResNet(eqx.Module):
    """Lift, the SDE $dy = F(t, y)\\,dt + \\sigma\\,dW$ with the ResNet field $F$,
    read-out. It acts on a batch: one SDE solve for the whole batch, with an
    independent Brownian motion per example (a `VirtualBrownianTree` of the batch's
    shape)."""

    lift: eqx.nn.Linear
    field: nde.fields.MLP
    head: eqx.nn.Linear
    sigma: jax.Array  # not trained (see __call__)

    def __init__(self, sigma, *, dim, layers, t1, key):
        lkey, fkey, hkey = jr.split(key, 3)
        self.lift = eqx.nn.Linear(2, dim, dtype=DTYPE, key=lkey)
        self.field = nde.fields.MLP(dim, layers=layers, t1=t1, dtype=DTYPE, key=fkey)
        self.head = eqx.nn.Linear(dim, 2, dtype=DTYPE, key=hkey)
        self.sigma = jnp.asarray(sigma, DTYPE)

    def __call__(self, x, *, key):
        field = self.field
        # A hyper-parameter held as an array, so that every sigma shares one
        # compilation; its gradient is zero, so Adam leaves it unchanged.
        sigma = jax.lax.stop_gradient(self.sigma)
        y0 = jax.vmap(self.lift)(x)
        bm = dfx.VirtualBrownianTree(
            0.0, field.t1, tol=field.t1 / (4 * field.layers), shape=y0.shape, key=key
        )

        def drift(t, y, args):
            return jax.vmap(field, in_axes=(None, 0, None))(t, y, args)

        def diffusion(t, y, args):
            return lx.DiagonalLinearOperator(sigma * jnp.ones_like(y))

        terms = dfx.MultiTerm(dfx.ODETerm(drift), dfx.ControlTerm(diffusion, bm))
        # One Euler–Maruyama step per layer, on the layers' own time grid.
        times = jnp.linspace(0.0, field.t1, field.layers + 1, dtype=DTYPE)
        sol = dfx.diffeqsolve(
            terms,
            dfx.Euler(),
            0.0,
            field.t1,
            None,
            y0,
            stepsize_controller=dfx.StepTo(ts=times),
            max_steps=field.layers,
            # Every step is a checkpoint: plain backpropagation through the steps.
            adjoint=dfx.RecursiveCheckpointAdjoint(checkpoints=field.layers),
        )
        return jax.vmap(self.head)(sol.ys[-1])


def loss_fn(model, x, y, *, key):
    return nde.losses.cross_entropy(model(x, key=key), y)


def ensemble_log_probs(model, x, key, samples):
    """The log of the softmax averaged over `samples` noise samples."""
    # One solve of the batch repeated `samples` times: independent noise per copy.
    logits = model(jnp.tile(x, (samples, 1)), key=key)
    logits = logits.reshape(samples, *x.shape[:-1], -1)
    probs = jnp.mean(jax.nn.softmax(logits, axis=-1), axis=0)
    return jnp.log(jnp.maximum(probs, jnp.finfo(probs.dtype).tiny))


@eqx.filter_jit
def robustness(model, x, y, epsilons, samples, *, key):
    """Accuracy of the ensemble prediction on `x` moved by each of `epsilons` per
    coordinate: in random sign directions, and by FGSM."""

    def at(eps, key):
        akey, rkey, ekey = jr.split(key, 3)
        grad = jax.grad(
            lambda x: nde.losses.cross_entropy(
                ensemble_log_probs(model, x, akey, samples), y
            )
        )(x)
        signs = jr.rademacher(rkey, x.shape, dtype=x.dtype)
        # Both perturbed sets in one solve (one compilation fewer).
        moved = jnp.concatenate([x + eps * signs, x + eps * jnp.sign(grad)])
        pred = jnp.argmax(ensemble_log_probs(model, moved, ekey, samples), axis=-1)
        correct = pred == jnp.concatenate([y, y])
        n = x.shape[0]
        return jnp.mean(correct[:n]), jnp.mean(correct[n:])

    keys = jr.split(key, epsilons.shape[0])
    return jax.lax.map(lambda a: at(*a), (epsilons, keys))


def train_and_attack(sigma, data, epsilons, config, mkey, tkey, ekey) -> dict:
    model = NoisyResNet(
        sigma,
        dim=SETTINGS["dim"],
        layers=SETTINGS["layers"],
        t1=SETTINGS["t1"],
        key=mkey,
    )
    steps = config["steps"]
    schedule = optax.cosine_decay_schedule(SETTINGS["lr"], steps, alpha=0.05)
    model, history = nde.train.fit(
        model,
        loss_fn,
        data.train,
        optax.adam(schedule),
        key=tkey,
        steps=steps,
        batch_size=SETTINGS["batch_size"],
        eval_every=max(1, steps // 10),
        progress=False,
    )
    x_test, y_test = jnp.asarray(data.x_test), jnp.asarray(data.y_test)
    random, fgsm = robustness(
        model, x_test, y_test, epsilons, config["samples"], key=ekey
    )
    return dict(
        random_sign_accuracy=np.asarray(random),
        fgsm_accuracy=np.asarray(fgsm),
        final_train_loss=history["train_loss"][-1],
        loss_history=dict(step=history["step"], loss=history["train_loss"]),
        # Noise of a fixed size matters less to a model that scales its features up.
        lift_weight_norm=float(jnp.linalg.norm(model.lift.weight, 2)),
    )


def main(argv=None):
    parser = arguments(__doc__, quick="tiny smoke run")
    parser.add_argument("--seed", type=int, default=0, help="data, init, noise")
    options = parser.parse_args(argv)
    config = dict(QUICK if options.quick else FULL)
    config.update(SETTINGS, seed=options.seed, quick=options.quick, solver="Euler")
    out = output(options, __file__, parser)
    start = time.perf_counter()

    data = nde.data.moons(
        n_train=config["n_train"],
        n_test=config["n_test"],
        noise=SETTINGS["data_noise"],
        seed=options.seed,
        dtype=np.float32,
    )
    epsilons = jnp.asarray(config["epsilons"], DTYPE)
    rows = []
    for sigma in config["sigmas"]:
        t = time.perf_counter()
        seeds = []
        for k in range(config["seeds"]):
            # Seed k: the same initialisation, batch order, training noise and
            # evaluation noise for every sigma.
            mkey, tkey, ekey = jr.split(jr.PRNGKey(options.seed + k), 3)
            seeds.append(
                train_and_attack(sigma, data, epsilons, config, mkey, tkey, ekey)
            )
        random = np.array([r["random_sign_accuracy"] for r in seeds])
        fgsm = np.array([r["fgsm_accuracy"] for r in seeds])
        row = dict(
            sigma=sigma,
            clean_accuracy_mean=float(random[:, 0].mean()),
            clean_accuracy_std=float(random[:, 0].std()),
            random_sign_accuracy_mean=random.mean(axis=0),
            random_sign_accuracy_std=random.std(axis=0),
            fgsm_accuracy_mean=fgsm.mean(axis=0),
            fgsm_accuracy_std=fgsm.std(axis=0),
            lift_weight_norm_mean=float(
                np.mean([r["lift_weight_norm"] for r in seeds])
            ),
            seeds=seeds,
            time_s=time.perf_counter() - t,
        )
        rows.append(row)
        print(
            f"sigma {sigma:4.2f}: clean {row['clean_accuracy_mean']:.3f}  random "
            + " ".join(f"{a:.3f}" for a in row["random_sign_accuracy_mean"])
            + "  FGSM "
            + " ".join(f"{a:.3f}" for a in row["fgsm_accuracy_mean"])
            + f"  ({row['time_s']:.1f}s)",
            flush=True,
        )

    write_json(
        out / "results.json",
        dict(
            experiment="neural_sde",
            config=config,
            environment=environment(),
            runs=rows,
            total_time_s=time.perf_counter() - start,
        ),
    )
    plot(rows, config, out / "robustness.png")
    return rows


def plot(rows, config, path):
    eps = np.asarray(config["epsilons"])
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), sharey=True)
    for ax, name, title in zip(
        axes,
        ("random_sign_accuracy", "fgsm_accuracy"),
        ("random sign perturbation", "FGSM (gradient sign) attack"),
    ):
        for row in rows:
            label = "deterministic (sigma = 0)" if row["sigma"] == 0 else None
            label = label or f"SDE, sigma = {row['sigma']:g}"
            ax.errorbar(
                eps,
                row[f"{name}_mean"],
                yerr=row[f"{name}_std"],
                fmt="o-",
                capsize=3,
                label=label,
            )
        ax.set_xlabel("epsilon (per coordinate)")
        ax.set_title(title)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel(
        f"test accuracy ({config['samples']}-sample ensemble;\n"
        f"mean ± std, {config['seeds']} seeds)"
    )
    axes[0].legend()
    fig.tight_layout()
    save_figure(fig, path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main()
