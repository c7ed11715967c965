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
  linear read-out. The SDE is `nde.solve(field, y0, diffusion=..., key=key)` with
  the diagonal diffusion $\sigma I$, by Euler–Maruyama (`solver="euler"`, Itô) with
  one step per layer: a ResNet with Gaussian noise of variance $\sigma^2 h$ added
  after every layer. With $\sigma = 0$ it is the deterministic ResNet, trained the
  same way.
- One model per $\sigma \in \{0, 0.5, 1\}$ and seed (two seeds), trained by
  `nde.train.fit` (Adam, cosine-decayed learning rate, 600 steps of 128 points)
  with a loss that takes a `key`, so that each step sees fresh noise.
- Prediction averages the softmax over 16 noise samples (`nde.nn.Ensemble`).
- Robustness: test accuracy when every test point is moved by $\epsilon$ in each
  coordinate, (a) in random directions (random signs), and (b) in the direction of
  the sign of the gradient of the loss (FGSM, Goodfellow et al. 2015). For the
  noisy models the gradient is that of the loss of the averaged prediction, over 16
  noise samples of its own (expectation over transformation, Athalye et al. 2018),
  so that the noise does not merely hide the gradient; the attacked points are then
  classified with fresh noise.

The cost of the gradient of a neural SDE, last: the same field with $\sigma = 0.5$
and reversible Heun (Stratonovich), a batch of 128, at 16 to 1024 steps: XLA's
temporary memory of the compiled gradient and its median time, for
`gradient="discretize"`, `"checkpoint"` and `"reversible"` (exact, O(1) memory).

    python experiments/neural_sde.py            # ~2-3 min on 2 CPU cores
    python experiments/neural_sde.py --quick    # smoke test, seconds

Results: `results.json`, `summary.md`, `robustness.png` and `gradient_cost.png` in
`--out` (default
`experiments/runs/neural_sde/`; `--publish` replaces the committed ones in
`experiments/results/neural_sde/`).
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
from _common import (
    arguments,
    command,
    environment,
    output,
    save_figure,
    write_json,
    write_text,
)


matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402

import neuralde as nde  # noqa: E402
from neuralde._bench._report import plain_log_labels  # noqa: E402


DTYPE = jnp.float32
FULL = dict(
    sigmas=(0.0, 0.5, 1.0),
    seeds=2,
    steps=600,
    samples=16,
    epsilons=(0.0, 0.05, 0.1, 0.15, 0.2, 0.3, 0.4),
    n_train=1024,
    n_test=1024,
    cost_steps=(16, 64, 100, 256, 1000),
    cost_repeats=10,
)
QUICK = dict(
    sigmas=(0.5,),
    seeds=1,
    steps=2,
    samples=2,
    epsilons=(0.0, 0.1),
    n_train=256,
    n_test=64,
    cost_steps=(4, 16),
    cost_repeats=1,
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
        # A hyper-parameter held as an array, so that every sigma shares one
        # compilation; its gradient is zero, so Adam leaves it unchanged.
        sigma = jax.lax.stop_gradient(self.sigma)
        y0 = jax.vmap(self.lift)(x)
        # One Euler–Maruyama step per layer; the batch has one Brownian motion per
        # example.
        y1 = nde.solve(
            self.field,
            y0,
            diffusion=lambda t, y, args: sigma * jnp.ones_like(y),
            key=key,
            steps=self.field.layers,
            solver="euler",
        )
        return jax.vmap(self.head)(y1)


class Probabilities(eqx.Module):
    """The softmax of a model's logits: what the ensemble averages."""

    model: NoisyResNet

    def __call__(self, x, *, key):
        return jax.nn.softmax(self.model(x, key=key), axis=-1)


def loss_fn(model, x, y, *, key):
    return nde.losses.cross_entropy(model(x, key=key), y)


def ensemble_log_probs(model, x, key, samples):
    """The log of the softmax averaged over `samples` noise samples."""
    probs = nde.nn.Ensemble(Probabilities(model), samples)(x, key=key)
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
    config.update(SETTINGS, seed=options.seed, quick=options.quick, solver="euler")
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

    costs = gradient_costs(config["cost_steps"], config["cost_repeats"])
    results = dict(
        experiment="neural_sde",
        command=command(__file__, options),
        config=config,
        environment=environment(),
        runs=rows,
        gradient_costs=costs,
        total_time_s=time.perf_counter() - start,
    )
    write_json(out / "results.json", results)
    plot(rows, config, out / "robustness.png")
    plot_costs(costs, out / "gradient_cost.png")
    write_text(out / "summary.md", summary(results))
    print(summary(results))
    return rows


MODES = ("discretize", "checkpoint", "reversible")
BATCHINGS = ("batched", "vmap")
COST_BATCH = 128


def gradient_costs(steps_list, repeats) -> list[dict]:
    """XLA's temporary memory and the median time of the parameter gradient of a
    neural SDE (the experiment's field, sigma = 0.5, reversible Heun) per number of
    steps, mode and way of batching: the batch passed to `solve` (`batched`), or
    `jax.vmap` over a solve of one example with a key of its own (`vmap`). The
    modes and batchings of one step count are timed interleaved, so that the load
    of the machine falls on all of them alike."""
    field = nde.fields.MLP(SETTINGS["dim"], layers=SETTINGS["layers"], dtype=DTYPE,
                           key=jr.PRNGKey(0))  # fmt: skip
    y0 = jr.normal(jr.PRNGKey(1), (COST_BATCH, SETTINGS["dim"]), DTYPE)

    def noise(t, y, args):
        return 0.5 * jnp.ones_like(y)

    def loss(field, key, *, mode, n, batching):
        def one(y, key):
            return nde.solve(field, y, diffusion=noise, key=key, steps=n,
                             solver="reversible_heun", gradient=mode)  # fmt: skip

        if batching == "batched":
            y1 = one(y0, key)
        else:
            y1 = jax.vmap(one)(y0, jr.split(key, COST_BATCH))
        return jnp.mean(y1**2)

    rows = []
    for n in steps_list:
        compiled = {}
        for batching in BATCHINGS:
            for mode in MODES:
                one = functools.partial(loss, mode=mode, n=n, batching=batching)
                grad = eqx.filter_jit(eqx.filter_grad(one))
                compiled[batching, mode] = grad.lower(field, jr.PRNGKey(2)).compile()
        times = {c: [] for c in compiled}
        for r in range(repeats + 1):
            for c, fn in compiled.items():
                t = time.perf_counter()
                jax.block_until_ready(fn(field, jr.PRNGKey(3 + r)))
                times[c].append(time.perf_counter() - t)
        for (batching, mode), fn in compiled.items():
            temp = fn.compiled.memory_analysis().temp_size_in_bytes
            ms = 1e3 * float(np.median(times[batching, mode][1:]))
            rows.append(dict(mode=mode, batching=batching, steps=n,
                             temp_bytes=int(temp), median_ms=ms))  # fmt: skip
            print(f"gradient {mode:10s} {batching:7s} {n:5d} steps: "
                  f"{temp / 2**20:8.2f} MiB, {ms:8.1f} ms", flush=True)  # fmt: skip
    return rows


def summary(results) -> str:
    """The tables of the run, in Markdown."""
    config, rows, costs = results["config"], results["runs"], results["gradient_costs"]
    eps = list(config["epsilons"])
    shown = [e for e in (0.1, 0.2, 0.4) if e in eps]
    fgsm = [e for e in (0.1, 0.2, 0.3, 0.4) if e in eps]
    head = ["model", "clean", *(f"random ε={e:g}" for e in shown),
            *(f"FGSM ε={e:g}" for e in fgsm)]  # fmt: skip
    lines = [
        "## Noise in a ResNet's dynamics and ensembles over it (Wang et al., "
        "Feynman–Kac)",
        "",
        f"`{results['command']}`, {results['total_time_s']:.0f} s. Test accuracy "
        f"of the {config['samples']}-sample ensemble, mean over {config['seeds']} "
        f"seed(s) (largest std {max_std(rows):.3f}):",
        "",
        "| " + " | ".join(head) + " |",
        "|---|" + "---:|" * (len(head) - 1),
    ]
    for row in rows:
        name = (
            "deterministic, σ = 0"
            if row["sigma"] == 0
            else f"SDE, σ = {row['sigma']:g}"
        )
        cells = [row["clean_accuracy_mean"]]
        cells += [row["random_sign_accuracy_mean"][eps.index(e)] for e in shown]
        cells += [row["fgsm_accuracy_mean"][eps.index(e)] for e in fgsm]
        lines.append(f"| {name} | " + " | ".join(f"{c:.3f}" for c in cells) + " |")
    lines += [
        "",
        f"The gradient of a neural SDE (this field, σ = 0.5, reversible Heun, batch "
        f"{COST_BATCH}), with the batch passed to `solve` (`batched`) or `jax.vmap` "
        "over one-example solves (`vmap`): XLA's temporary memory of the compiled "
        "gradient, MiB, and its median time, ms (modes timed interleaved), with the "
        "ratio to `discretize` of the same batching.",
        "",
        "| steps | batching | " + " | ".join(MODES) + " |",
        "|---:|---|" + "---:|" * len(MODES),
    ]
    for n in config["cost_steps"]:
        for batching in BATCHINGS:
            by = {
                c["mode"]: c
                for c in costs
                if c["steps"] == n and c["batching"] == batching
            }
            cells = [_cost_cell(by[m], by["discretize"]) for m in MODES]
            lines.append(f"| {n} | {batching} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _cost_cell(cost, base) -> str:
    mib, ms = cost["temp_bytes"] / 2**20, cost["median_ms"]
    memory = cost["temp_bytes"] / base["temp_bytes"]
    return f"{mib:.2f} MiB ({memory:.2g}x), {ms:.1f} ms ({ms / base['median_ms']:.2f}x)"


def max_std(rows) -> float:
    return max(
        float(np.max(np.concatenate([np.ravel(r["random_sign_accuracy_std"]),
                                     np.ravel(r["fgsm_accuracy_std"])])))
        for r in rows
    )  # fmt: skip


def plot_costs(costs, path):
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for i, mode in enumerate(MODES):
        for batching, style in zip(BATCHINGS, ("o-", "s--")):
            cs = [c for c in costs if c["mode"] == mode and c["batching"] == batching]
            steps = [c["steps"] for c in cs]
            label = f"{mode}, {batching}"
            memory = [c["temp_bytes"] / 2**20 for c in cs]
            axes[0].loglog(steps, memory, style, c=f"C{i}", label=label)
            axes[1].loglog(steps, [c["median_ms"] for c in cs], style, c=f"C{i}",
                           label=label)  # fmt: skip
    ticks = sorted({c["steps"] for c in costs})
    for ax, label in zip(axes, ("XLA temporary memory, MiB", "median time, ms")):
        ax.set_xticks(ticks, [str(t) for t in ticks])
        ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
        ax.set_xlabel("steps (reversible Heun)")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3, which="both")
    for ax in axes:
        plain_log_labels(ax)
    axes[0].legend(fontsize="small")
    fig.suptitle(f"gradient of a neural SDE, batch {COST_BATCH}")
    fig.tight_layout()
    save_figure(fig, path, dpi=120)
    plt.close(fig)


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
