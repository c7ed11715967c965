r"""Neural ODE regression of a time series, and the three ways to take its gradient.

Data: `nde.data.damped_oscillator` ($\ddot x + 2\zeta\omega\dot x + \omega^2 x = 0$,
$\omega = 1$, $\zeta = 0.1$), trajectories of the state $(x, v)$ from initial states
uniform on $[-1, 1]^2$, observed at 101 times on $[0, 10]$ with Gaussian noise of
standard deviation 0.05. The test trajectories start from other initial states.

Model (a latent neural ODE): a linear encoder lifts the first (noisy) observation to
a 16-dimensional state, an `nde.fields.MLP` field $\tanh(K y + b)$, constant in
time, carries it through the observation times, and a linear decoder reads $(x, v)$
at each of them. The solve is adaptive, `nde.solve(field, y0, ts=ts,
solver="tsit5", rtol=1e-4, atol=1e-6)`, and batched with `batched=True`: the
batch is one ODE system, so every trajectory shares the step sizes, and the
backward pass of the custom VJPs sees the whole batch rather than one example at a
time under `jax.vmap` (see `nde.solve`'s docstring). The loss is the mean squared
error against the noisy observations, full batch, Adam with a cosine-decayed
learning rate, in two phases as in diffrax's neural ODE example: 200 steps on the
first 30% of the observation times, then 600 on all of them.

The same problem is trained from the same initialisation with each gradient mode:

- `discretize`: backpropagation through the solver's steps
  (`diffrax.RecursiveCheckpointAdjoint` with diffrax's default number of
  checkpoints for `max_steps=4096`, about 90, so a solve of fewer steps stores them
  all);
- `checkpoint`: the same gradient with only 8 checkpoints
  (`nde.gradients.Checkpoint(checkpoints=8)`): recomputation for memory. (Without
  `checkpoints=`, an adaptive solve under `"checkpoint"` uses the same default as
  `"discretize"`, so the two modes would compile to the same program.)
- `adjoint`: the continuous adjoint solved backwards (`diffrax.BacksolveAdjoint`),
  an approximation of the discrete gradient.

Measured per mode, on the whole horizon (the second phase): the wall time of one
training step (median, the modes' steps interleaved so that load on the machine
affects them alike), the temporary memory of the compiled step (XLA's
`memory_analysis().temp_size_in_bytes` of `jax.jit(step).lower(...).compile()`),
the relative difference of its gradient at the initial model from the
`discretize` one, the root-mean-square error of the fitted trajectories against
the clean ones, on the training and the test initial states, and the steps the
adaptive solver takes for the trained model (counted with diffrax). Peak RSS is
not measured: with a state of 32 x 16 floats, it would be the JAX runtime's.

    python experiments/time_series.py            # ~1-2 min on 2 CPU cores
    python experiments/time_series.py --quick    # smoke test, seconds

Results: `results.json`, `fit.png` and `modes.png` in `--out` (default
`experiments/runs/time_series/`; `--publish` replaces the committed ones in
`experiments/results/time_series/`).
"""

import statistics
import time

import diffrax as dfx
import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import matplotlib
import numpy as np
import optax
from _common import arguments, environment, output, save_figure, write_json
from jax.flatten_util import ravel_pytree


matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

import neuralde as nde  # noqa: E402


DTYPE = jnp.float32
MODES = {
    "discretize": dict(gradient="discretize"),
    "checkpoint": dict(gradient=nde.gradients.Checkpoint(checkpoints=8)),
    "adjoint": dict(gradient="adjoint"),
}
# phases: (fraction of the observation times fitted, training steps).
FULL = dict(
    modes=tuple(MODES),
    phases=((0.3, 200), (1.0, 600)),
    n_train=32,
    n_test=16,
    num_times=101,
)
# One mode and one phase: the compilation of an adaptive solve and its gradient
# dominates the run time.
QUICK = dict(
    modes=("discretize",), phases=((1.0, 3),), n_train=4, n_test=2, num_times=21
)
SETTINGS = dict(
    latent=16, lr=1e-2, noise=0.05, t1=10.0, solver="tsit5", rtol=1e-4, atol=1e-6
)


class LatentODE(eqx.Module):
    """Encoder, `nde.fields.MLP` field, decoder. Acts on a batch of trajectories,
    because the adaptive solve is batched (`batched=True`)."""

    encoder: eqx.nn.Linear
    field: nde.fields.MLP
    decoder: eqx.nn.Linear

    def __init__(self, latent, *, key):
        ekey, fkey, dkey = jr.split(key, 3)
        self.encoder = eqx.nn.Linear(2, latent, dtype=DTYPE, key=ekey)
        self.field = nde.fields.MLP(latent, dtype=DTYPE, key=fkey)
        self.decoder = eqx.nn.Linear(latent, 2, dtype=DTYPE, key=dkey)

    def __call__(self, ts, x0, *, mode="discretize"):
        """The predicted trajectories `(batch, len(ts), 2)` from the initial
        observations `x0` `(batch, 2)`."""
        s = SETTINGS
        y0 = jax.vmap(self.encoder)(x0)
        ys = nde.solve(
            self.field,
            y0,
            t1=s["t1"],
            ts=ts,
            solver=s["solver"],
            rtol=s["rtol"],
            atol=s["atol"],
            batched=True,
            **MODES[mode],
        )  # (len(ts), batch, latent)
        return jax.vmap(jax.vmap(self.decoder))(jnp.swapaxes(ys, 0, 1))


def compile_step(model, optimizer, opt_state, ts, y, mode):
    """The training step for `mode`, compiled ahead of time, and XLA's memory
    analysis of it."""
    params, static = eqx.partition(model, eqx.is_inexact_array)

    def loss_fn(params):
        pred = eqx.combine(params, static)(ts, y[:, 0], mode=mode)
        return nde.losses.mse(pred, y)

    def step(params, opt_state):
        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss, grads

    compiled = jax.jit(step).lower(params, opt_state).compile()
    memory = compiled.memory_analysis()
    memory = dict(
        temp_bytes=int(memory.temp_size_in_bytes),
        argument_bytes=int(memory.argument_size_in_bytes),
        output_bytes=int(memory.output_size_in_bytes),
    )
    return compiled, static, memory


@eqx.filter_jit
def predict(model, ts, y_noisy):
    """The trajectories predicted from the noisy first observations."""
    return model(ts, y_noisy[:, 0])


@eqx.filter_jit
def solver_steps(model, ts, x0):
    """The accepted and rejected steps of the adaptive solve of `model` from `x0`:
    the solve of `nde.solve` (`PIDController(rtol, atol)`, diffrax's choice of the
    first step), written with diffrax, whose statistics `nde.solve` does not
    return."""
    s = SETTINGS
    y0 = jax.vmap(model.encoder)(x0)
    field = jax.vmap(model.field, in_axes=(None, 0, None))
    sol = dfx.diffeqsolve(
        dfx.ODETerm(field),
        dfx.Tsit5(),
        0.0,
        s["t1"],
        None,
        y0,
        saveat=dfx.SaveAt(ts=ts),
        stepsize_controller=dfx.PIDController(rtol=s["rtol"], atol=s["atol"]),
        max_steps=4096,
    )
    return sol.stats["num_accepted_steps"], sol.stats["num_rejected_steps"]


def rmse(pred, clean) -> float:
    return float(np.sqrt(np.mean((np.asarray(pred) - np.asarray(clean)) ** 2)))


def main(argv=None):
    parser = arguments(__doc__, quick="tiny smoke run")
    parser.add_argument("--seed", type=int, default=0, help="data and init")
    options = parser.parse_args(argv)
    config = dict(QUICK if options.quick else FULL)
    config.update(
        SETTINGS,
        seed=options.seed,
        quick=options.quick,
        gradient_options={m: str(MODES[m]["gradient"]) for m in config["modes"]},
    )
    out = output(options, __file__, parser)
    start = time.perf_counter()

    data = nde.data.damped_oscillator(
        n_train=config["n_train"],
        n_test=config["n_test"],
        t1=SETTINGS["t1"],
        num_times=config["num_times"],
        noise=SETTINGS["noise"],
        seed=options.seed,
        dtype=np.float32,
    )
    ts = jnp.asarray(data.ts)
    y_train, y_test = jnp.asarray(data.y_train), jnp.asarray(data.y_test)
    clean_train, clean_test = (
        jnp.asarray(data.clean_train),
        jnp.asarray(data.clean_test),
    )
    noise_floor = float(jnp.sqrt(jnp.mean((y_train - clean_train) ** 2)))

    model0 = LatentODE(SETTINGS["latent"], key=jr.PRNGKey(options.seed))
    modes = config["modes"]
    params0, _ = eqx.partition(model0, eqx.is_inexact_array)
    params = {m: params0 for m in modes}
    losses = {m: [] for m in modes}
    phases = []
    for fraction, steps in config["phases"]:
        # As in diffrax's neural ODE example: fit the start of the trajectories
        # first, then all of it; a fit of the whole at once stalls (here at a
        # training MSE of ~0.12, a decaying curve).
        k = max(2, round(fraction * len(ts)))
        schedule = optax.cosine_decay_schedule(SETTINGS["lr"], steps, alpha=0.05)
        optimizer = optax.adam(schedule)
        phase = dict(fraction=fraction, num_times=k, steps=steps, modes={})
        compiled, opt_state, static = {}, {}, None
        for mode in modes:
            t = time.perf_counter()
            opt_state[mode] = optimizer.init(params[mode])
            compiled[mode], static, memory = compile_step(
                model0, optimizer, opt_state[mode], ts[:k], y_train[:, :k], mode
            )
            phase["modes"][mode] = dict(compile_s=time.perf_counter() - t, **memory)
        # Interleaved: step i of every mode, then step i + 1, so that the load of
        # the machine at any moment falls on all modes alike.
        times = {m: [] for m in modes}
        for _ in range(steps):
            for mode in modes:
                t = time.perf_counter()
                params[mode], opt_state[mode], loss, _ = compiled[mode](
                    params[mode], opt_state[mode]
                )
                losses[mode].append(float(loss))  # waits for the step
                times[mode].append(time.perf_counter() - t)
        for mode in modes:
            phase["modes"][mode].update(
                step_ms_median=1e3 * statistics.median(times[mode]),
                step_ms_iqr=1e3
                * float(np.subtract(*np.percentile(times[mode], [75, 25]))),
            )
        phases.append(phase)
    # The gradient of each mode at the initial model, on the whole horizon (the
    # last phase's compiled steps; their update is discarded).
    grads = {
        m: ravel_pytree(compiled[m](params0, optimizer.init(params0))[3])[0]
        for m in modes
    }

    rows, predictions = {}, {}
    n_train = y_train.shape[0]
    final = phases[-1]["modes"]
    for mode in modes:
        model = eqx.combine(params[mode], static)
        # Train and test in one solve: one compilation. The batch shares its step
        # sizes, which changes the prediction by about the solver's tolerance.
        pred = predict(model, ts, jnp.concatenate([y_train, y_test]))
        predictions[mode] = np.asarray(pred[n_train:])
        diff = jnp.linalg.norm(grads[mode] - grads[modes[0]]) / jnp.linalg.norm(
            grads[modes[0]]
        )
        rows[mode] = dict(
            step_ms_median=final[mode]["step_ms_median"],
            temp_bytes=final[mode]["temp_bytes"],
            initial_gradient_rel_diff_vs_discretize=float(diff),
            final_loss=losses[mode][-1],
            rmse_train_vs_clean=rmse(pred[:n_train], clean_train),
            rmse_test_vs_clean=rmse(pred[n_train:], clean_test),
        )
        if not options.quick:
            accepted, rejected = solver_steps(model, ts, y_train[:, 0])
            rows[mode].update(
                solver_steps_accepted=int(accepted), solver_steps_rejected=int(rejected)
            )
        print(
            f"{mode:10s} step {rows[mode]['step_ms_median']:7.1f} ms  temp "
            f"{rows[mode]['temp_bytes'] / 1e6:7.3f} MB  grad diff "
            f"{float(diff):.1e}  RMSE train {rows[mode]['rmse_train_vs_clean']:.4f} "
            f"test {rows[mode]['rmse_test_vs_clean']:.4f}",
            flush=True,
        )
    print(f"noise of the observations (RMSE against clean): {noise_floor:.4f}")

    write_json(
        out / "results.json",
        dict(
            experiment="time_series",
            config=config,
            environment=environment(),
            noise_rmse=noise_floor,
            modes=rows,
            phases=phases,
            loss_history=losses,
            total_time_s=time.perf_counter() - start,
        ),
    )
    plot_fit(predictions, data, out / "fit.png")
    plot_modes(rows, losses, out / "modes.png")
    return rows


def plot_fit(predictions, data, path):
    n = min(3, data.y_test.shape[0])
    fig, axes = plt.subplots(2, n, figsize=(4.2 * n, 5.4), squeeze=False)
    for c, name in enumerate(("x", "v")):
        for i in range(n):
            ax = axes[c][i]
            ax.plot(data.ts, data.y_test[i, :, c], ".", ms=3, color="0.6")
            ax.plot(data.ts, data.clean_test[i, :, c], "-", color="k", lw=1)
            for mode, pred in predictions.items():
                ax.plot(data.ts, pred[i, :, c], "--", label=mode)
            ax.set_title(f"test trajectory {i}: {name}")
            ax.set_xlabel("t")
    axes[0][0].legend(fontsize=8)
    fig.suptitle("Damped oscillator: noisy data (grey), clean (black), fits (dashed)")
    fig.tight_layout()
    save_figure(fig, path, dpi=120)
    plt.close(fig)


def plot_modes(rows, losses, path):
    modes = list(rows)
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.4))
    for mode in modes:
        axes[0].plot(losses[mode], label=mode)
    axes[0].set_yscale("log")
    axes[0].set_xlabel("step")
    axes[0].set_ylabel("training loss (MSE)")
    axes[0].legend()
    axes[1].bar(modes, [rows[m]["step_ms_median"] for m in modes])
    axes[1].set_ylabel("median time per step (ms)")
    axes[2].bar(modes, [rows[m]["temp_bytes"] / 1e6 for m in modes])
    axes[2].set_ylabel("XLA temp memory of the step (MB)")
    fig.tight_layout()
    save_figure(fig, path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main()
