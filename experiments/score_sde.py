r"""A score-based diffusion model on a 2-D density, sampled by its reverse-time SDE
and by its probability-flow ODE, both through `nde.solve` (Song et al. 2021).

The data are eight Gaussians on a circle of radius 2 (standard deviation 0.1),
drawn here. The forward process is the variance-preserving SDE
$dx = -\tfrac12 \beta(t)\, x\, dt + \sqrt{\beta(t)}\, dW$ on $[0, 1]$, with
$\beta(t) = 0.1 + 19.9\, t$, whose marginals are
$x_t = \sqrt{\bar\alpha(t)}\, x_0 + \sqrt{1 - \bar\alpha(t)}\, \epsilon$,
$\bar\alpha(t) = e^{-\int_0^t \beta}$. A score network
$s_\theta(x, t) = -\mathrm{MLP}(x, \phi(t)) / \sigma(t)$, $\sigma(t) = \sqrt{1 -
\bar\alpha(t)}$, with Fourier features $\phi$ of $\log \sigma(t)$, is trained by
`nde.losses.denoising_score_matching` (`prediction="score"`) with
`nde.train.fit`, at times uniform on $[10^{-3}, 1]$.

Samples start from $\mathcal N(0, I)$ at $t = 1$ and run to $t = 10^{-3}$, in the
reversed time $\tau = 1 - t$ so that `solve` integrates forwards:

- the reverse-time SDE
  $dx = [\tfrac12\beta\, x + \beta\, s_\theta(x, t)]\, d\tau + \sqrt\beta\, dW$, with
  additive noise, by Euler–Maruyama (`nde.solve(..., diffusion=..., key=...)`);
- the probability-flow ODE $dx/d\tau = \tfrac12 \beta\, x + \tfrac12 \beta\,
  s_\theta(x, t)$, by RK4.

The samples are compared with fresh data by the squared maximum mean discrepancy
(MMD², Gaussian kernel of bandwidth 0.5), next to the MMD² of two independent data
sets of the same size: the floor that a perfect model would reach.

    python experiments/score_sde.py            # under a minute on 2 CPU cores
    python experiments/score_sde.py --quick    # smoke test, seconds

Results: `results.json`, `summary.md` and `samples.png` in `--out` (default
`experiments/runs/score_sde/`; `--publish` replaces the committed ones in
`experiments/results/score_sde/`).
"""

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

import neuralde as nde  # noqa: E402


DTYPE = jnp.float32
BETA_MIN, BETA_MAX, T_MIN = 0.1, 20.0, 1e-3
FULL = dict(
    train=8192, steps=20000, batch=256, width=128, samples=2000, solve_steps=500
)
QUICK = dict(train=512, steps=20, batch=64, width=16, samples=200, solve_steps=20)
SETTINGS = dict(lr=2e-3, bandwidth=0.5)
FREQUENCIES = (0.25, 0.5, 1.0, 2.0, 4.0)


def eight_gaussians(n: int, *, seed: int) -> np.ndarray:
    """`n` points of the mixture of eight Gaussians (std 0.1) on the circle of
    radius 2."""
    rng = np.random.default_rng(seed)
    angle = rng.integers(0, 8, n) * np.pi / 4
    centres = 2.0 * np.stack([np.cos(angle), np.sin(angle)], axis=1)
    return (centres + 0.1 * rng.normal(size=(n, 2))).astype(np.float32)


def beta(t):
    return BETA_MIN + (BETA_MAX - BETA_MIN) * t


def alpha_bar(t):
    """$\\bar\\alpha(t) = \\exp(-\\int_0^t \\beta)$ of the variance-preserving SDE."""
    return jnp.exp(-(BETA_MIN * t + 0.5 * (BETA_MAX - BETA_MIN) * t**2))


class Score(eqx.Module):
    """$s_\\theta(x, t) = -\\mathrm{MLP}(x, t) / \\sqrt{1 - \\bar\\alpha(t)}$, for
    one example: the network predicts the noise, scaled to the score."""

    mlp: eqx.nn.MLP

    def __init__(self, width, *, key):
        features = 2 + 2 * len(FREQUENCIES)
        self.mlp = eqx.nn.MLP(features, 2, width, 3, activation=jax.nn.silu, key=key)

    def __call__(self, x, t):
        sigma = jnp.sqrt(1.0 - alpha_bar(t))
        # The noise level as Fourier features of log sigma, which spans [-4, 0].
        phase = jnp.log(sigma) * jnp.asarray(FREQUENCIES, x.dtype)
        features = jnp.concatenate([x, jnp.sin(phase), jnp.cos(phase)])
        return -self.mlp(features) / sigma


def loss_fn(model, x, *, key):
    tkey, nkey = jr.split(key)
    t = jr.uniform(tkey, (x.shape[0],), x.dtype, T_MIN, 1.0)
    return nde.losses.denoising_score_matching(
        jax.vmap(model), x, t, alpha_bar=alpha_bar, key=nkey, prediction="score"
    )


def reverse_drift(model, *, ode: bool):
    """The drift in the reversed time $\\tau = 1 - t$, of one example."""
    half = 0.5 if ode else 1.0

    def drift(tau, x, args):
        t = 1.0 - tau
        return 0.5 * beta(t) * x + half * beta(t) * model(x, t)

    return drift


@eqx.filter_jit
def sample(model, z, steps, *, key=None):
    """Samples from the base points `z`: by the reverse-time SDE with `key`, by the
    probability-flow ODE without."""
    t1 = 1.0 - T_MIN
    if key is None:
        return nde.solve(
            reverse_drift(model, ode=True), z, t1=t1, steps=steps, solver="rk4",
            batched=True,
        )  # fmt: skip
    return nde.solve(
        reverse_drift(model, ode=False), z, t1=t1, steps=steps, solver="euler",
        diffusion=lambda tau, x, args: jnp.sqrt(beta(1.0 - tau)) * jnp.ones_like(x),
        key=key, batched=True,
    )  # fmt: skip


@jax.jit
def mmd2(x, y, bandwidth):
    """The unbiased squared maximum mean discrepancy with a Gaussian kernel."""

    def kernel(a, b):
        d2 = jnp.sum((a[:, None] - b[None]) ** 2, axis=-1)
        return jnp.exp(-d2 / (2 * bandwidth**2))

    n, m = x.shape[0], y.shape[0]
    kxx, kyy, kxy = kernel(x, x), kernel(y, y), kernel(x, y)
    xx = (jnp.sum(kxx) - jnp.trace(kxx)) / (n * (n - 1))
    yy = (jnp.sum(kyy) - jnp.trace(kyy)) / (m * (m - 1))
    return xx + yy - 2 * jnp.mean(kxy)


def main(argv=None):
    parser = arguments(__doc__, quick="a few training steps, few samples")
    parser.add_argument("--seed", type=int, default=0, help="data, init, noise")
    args = parser.parse_args(argv)
    cfg = dict(QUICK if args.quick else FULL, **SETTINGS)
    out = output(args, __file__, parser)
    start = time.perf_counter()

    data = eight_gaussians(cfg["train"], seed=args.seed)
    mkey, fkey, zkey, skey = jr.split(jr.PRNGKey(args.seed), 4)
    schedule = optax.cosine_decay_schedule(cfg["lr"], cfg["steps"], alpha=0.05)
    model, history = nde.train.fit(
        Score(cfg["width"], key=mkey), loss_fn, (data,), optax.adam(schedule),
        key=fkey, steps=cfg["steps"], batch_size=cfg["batch"],
        eval_every=max(1, cfg["steps"] // 20), progress=False,
    )  # fmt: skip
    train_time = time.perf_counter() - start

    z = jr.normal(zkey, (cfg["samples"], 2), DTYPE)
    sde = np.asarray(sample(model, z, cfg["solve_steps"], key=skey))
    ode = np.asarray(sample(model, z, cfg["solve_steps"]))
    fresh = eight_gaussians(cfg["samples"], seed=args.seed + 1)
    other = eight_gaussians(cfg["samples"], seed=args.seed + 2)
    bw = cfg["bandwidth"]
    scores = dict(
        reverse_sde=float(mmd2(sde, fresh, bw)),
        probability_flow_ode=float(mmd2(ode, fresh, bw)),
        data_floor=float(mmd2(other, fresh, bw)),
        base_normal=float(mmd2(np.asarray(z), fresh, bw)),
    )
    results = dict(
        experiment="score_sde",
        command=command(__file__, args),
        config=cfg,
        environment=environment(),
        mmd2=scores,
        history=history,
        train_time_s=train_time,
        total_time_s=time.perf_counter() - start,
    )
    write_json(out / "results.json", results)
    figure(fresh, sde, ode, scores, out / "samples.png")
    text = summary(results)
    write_text(out / "summary.md", text)
    print(text)


def summary(results) -> str:
    cfg, s = results["config"], results["mmd2"]
    return "\n".join(
        [
            "## A score SDE on eight Gaussians, sampled by `nde.solve`",
            "",
            f"`{results['command']}`, {results['total_time_s']:.0f} s "
            f"({results['train_time_s']:.0f} s training: {cfg['steps']} steps of "
            f"{cfg['batch']}, final loss {results['history']['train_loss'][-1]:.3f}). "
            f"{cfg['samples']} samples, {cfg['solve_steps']} steps each; MMD² against "
            f"{cfg['samples']} fresh data points (Gaussian kernel, bandwidth "
            f"{cfg['bandwidth']:g}):",
            "",
            "| samples | MMD² |",
            "|---|---:|",
            f"| reverse-time SDE (Euler–Maruyama) | {s['reverse_sde']:.2e} |",
            f"| probability-flow ODE (RK4) | {s['probability_flow_ode']:.2e} |",
            f"| another data set (the floor) | {s['data_floor']:.2e} |",
            f"| the base N(0, I) (no model) | {s['base_normal']:.2e} |",
            "",
        ]
    )


def figure(data, sde, ode, scores, path):
    fig, axes = plt.subplots(1, 3, figsize=(12, 4.2), sharex=True, sharey=True)
    panels = (
        (data, "data (fresh draw)"),
        (sde, f"reverse-time SDE, MMD² {scores['reverse_sde']:.1e}"),
        (ode, f"probability-flow ODE, MMD² {scores['probability_flow_ode']:.1e}"),
    )
    for ax, (points, title) in zip(axes, panels):
        ax.scatter(points[:, 0], points[:, 1], s=2, alpha=0.5)
        ax.set_title(title, fontsize="medium")
        ax.set_aspect("equal")
        ax.set_xlim(-3, 3)
        ax.set_ylim(-3, 3)
        ax.set_xlabel("x₁")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("x₂")
    fig.tight_layout()
    save_figure(fig, path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
