"""The cost of a `neuralde.train.fit` step of a model with an `ODEBlock`, under each
gradient mode, against `"discretize"`.

The model is a classifier as a user writes one: a linear stem applied per example
(`jax.vmap`), an `nde.nn.ODEBlock` on the whole batch (an 8-layer tanh MLP field,
state 64, `steps` steps of `reversible_heun`), and a linear head per example.
The block takes the batch by its shape, the fast way for every mode. Each mode
trains the same model on the same synthetic data with `fit`; the time of a step is
read from `fit`'s own history (recorded every 10 steps, after the loss is on the
host), so compilation is excluded. The modes are run in turn, `repeats` times, and
the medians over all intervals are compared.

Run:

```bash
python experiments/engine_fit.py            # full: 100 and 1000 steps
python experiments/engine_fit.py --quick    # a smoke run
```

Results: `results.json`, `summary.md` and `fit_step.png` in `--out` (default
`experiments/runs/engine_fit/`; `--publish` replaces the committed ones in
`experiments/results/engine_fit/`).
"""

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import optax
from _common import (
    arguments,
    environment,
    output,
    save_figure,
    write_json,
    write_text,
)
from matplotlib.figure import Figure

import neuralde as nde


MODES = ("discretize", "checkpoint", "adjoint", "reversible")
FULL = dict(steps=(100, 1000), batch=256, width=64, layers=8, fit_steps=60, repeats=3)
QUICK = dict(steps=(10,), batch=16, width=8, layers=2, fit_steps=40, repeats=1)
RECORD_EVERY = 10


class Classifier(eqx.Module):
    stem: eqx.nn.Linear
    block: nde.nn.ODEBlock
    head: eqx.nn.Linear

    def __init__(self, width, layers, steps, gradient, *, key):
        skey, fkey, hkey = jr.split(key, 3)
        self.stem = eqx.nn.Linear(2, width, key=skey)
        field = nde.fields.MLP(width, layers=layers, dtype=jnp.float32, key=fkey)
        self.block = nde.nn.ODEBlock(
            field, steps=steps, solver="reversible_heun", gradient=gradient
        )
        self.head = eqx.nn.Linear(width, 2, key=hkey)

    def __call__(self, x):
        h = jax.vmap(self.stem)(x)  # (batch, width)
        h = self.block(h)  # the whole batch in one solve
        return jax.vmap(self.head)(h)


def loss_fn(model, x, y):
    logits = model(x)
    return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, y))


def step_times(history) -> list[float]:
    """Seconds per step over each recorded interval after the first (which holds
    the compilation)."""
    t, s = np.asarray(history["time_s"]), np.asarray(history["step"])
    if len(t) < 3:
        raise ValueError("Time at least 3 records (fit_steps >= 3 * RECORD_EVERY).")
    return list(np.diff(t[1:]) / np.diff(s[1:]))


def run(cfg) -> dict:
    key = jr.PRNGKey(0)
    x = jr.normal(key, (4 * cfg["batch"], 2), jnp.float32)
    y = (x[:, 0] * x[:, 1] > 0).astype(jnp.int32)
    out = {}
    for steps in cfg["steps"]:
        times = {m: [] for m in MODES}
        losses = {}
        for _ in range(cfg["repeats"]):
            for mode in MODES:
                model = Classifier(
                    cfg["width"], cfg["layers"], steps, mode, key=jr.PRNGKey(1)
                )
                _, history = nde.train.fit(
                    model,
                    loss_fn,
                    (x, y),
                    optax.adam(1e-3),
                    key=jr.PRNGKey(2),
                    steps=cfg["fit_steps"],
                    batch_size=cfg["batch"],
                    eval_every=RECORD_EVERY,
                    progress=False,
                )
                times[mode] += step_times(history)
                losses[mode] = history["train_loss"][-1]
        base = float(np.median(times["discretize"]))
        out[str(steps)] = {
            m: dict(
                step_s=float(np.median(times[m])),
                vs_discretize=float(np.median(times[m])) / base,
                intervals=len(times[m]),
                final_train_loss=losses[m],
            )
            for m in MODES
        }
    return out


def summary(results: dict, cfg: dict) -> str:
    lines = [
        "# A `fit` step with an `ODEBlock`, per gradient mode",
        "",
        f"Batch {cfg['batch']}, state {cfg['width']}, MLP field of {cfg['layers']} "
        "layers, reversible_heun; median seconds per step over "
        f"{cfg['repeats']} interleaved runs of {cfg['fit_steps']} steps.",
        "",
        "| solver steps | mode | ms per fit step | x discretize |",
        "|---:|---|---:|---:|",
    ]
    for steps, rows in results.items():
        for mode, r in rows.items():
            lines.append(
                f"| {steps} | {mode} | {1e3 * r['step_s']:.1f} "
                f"| {r['vs_discretize']:.2f}x |"
            )
    return "\n".join(lines) + "\n"


def figure(results: dict) -> Figure:
    """Bars of the time of a fit step against discretize, per mode and step count."""
    fig = Figure(figsize=(6.4, 3.6))
    ax = fig.subplots()
    counts = list(results)
    width = 0.8 / len(counts)
    for i, steps in enumerate(counts):
        ratios = [results[steps][m]["vs_discretize"] for m in MODES]
        x = [j + (i - (len(counts) - 1) / 2) * width for j in range(len(MODES))]
        bars = ax.bar(x, ratios, width, label=f"{steps} solver steps")
        ax.bar_label(bars, fmt="%.2f", fontsize=8)
    ax.axhline(1.0, color="black", lw=0.8, ls="--")
    ax.set_xticks(range(len(MODES)), MODES)
    ax.set_ylabel("fit step time / discretize's")
    ax.set_title("A fit step with an ODEBlock on the batch, per gradient mode")
    ax.legend(fontsize=8, loc="upper right")
    ax.set_ylim(
        0, 1.25 * max(r["vs_discretize"] for v in results.values() for r in v.values())
    )
    fig.tight_layout()
    return fig


def main(argv=None) -> None:
    parser = arguments(__doc__, quick="10 steps, a small model, one repeat")
    args = parser.parse_args(argv)
    out = output(args, __file__, parser)
    cfg = QUICK if args.quick else FULL
    results = run(cfg)
    write_json(
        out / "results.json",
        dict(config=cfg, environment=environment(), results=results),
    )
    text = summary(results, cfg)
    write_text(out / "summary.md", text)
    save_figure(figure(results), out / "fit_step.png", dpi=120)
    print(text)


if __name__ == "__main__":
    main()
