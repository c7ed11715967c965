"""Training (Adam, minibatches, one jitted `lax.scan` per epoch) and the measurements
of a trained classifier."""

from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import optax
from jaxtyping import Array, Float, Int, PRNGKeyArray

from .. import stability
from ._models import Classifier


def loss_fn(model: Classifier, x, labels) -> Float[Array, ""]:
    logits = jax.vmap(model)(x)
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()


@eqx.filter_jit
def train_epoch(
    model: Classifier,
    opt_state,
    x: Float[Array, "n 2"],
    labels: Int[Array, " n"],
    batches: Int[Array, "batches size"],
    optimiser: optax.GradientTransformation,
):
    """One pass over the minibatches `batches` (rows of indices). Returns the model,
    the optimiser state and the loss of every minibatch."""

    def step(carry, idx):
        model, opt_state = carry
        loss, grads = eqx.filter_value_and_grad(loss_fn)(model, x[idx], labels[idx])
        params = eqx.filter(model, eqx.is_array)
        updates, opt_state = optimiser.update(grads, opt_state, params)
        return (eqx.apply_updates(model, updates), opt_state), loss

    (model, opt_state), losses = jax.lax.scan(step, (model, opt_state), batches)
    return model, opt_state, losses


def train(
    model: Classifier,
    x: np.ndarray,
    labels: np.ndarray,
    *,
    epochs: int,
    batch_size: int,
    lr: float,
    key: PRNGKeyArray,
    on_epoch: Callable[[int, float], None] = lambda epoch, loss: None,
) -> tuple[Classifier, list[float], int | None]:
    """Adam with a cosine-decayed learning rate (to 5% of `lr`) over `epochs` passes.

    Returns the model, the mean loss of each epoch run, and the epoch (from 1) whose
    loss was not finite, `None` if none was. Training stops at that epoch. A solve
    whose state became non-finite raises (`neuralde.solve`); the caller treats that
    as divergence too.
    """
    n = x.shape[0]
    per_epoch = n // batch_size
    schedule = optax.cosine_decay_schedule(lr, epochs * per_epoch, alpha=0.05)
    optimiser = optax.adam(schedule)
    opt_state = optimiser.init(eqx.filter(model, eqx.is_array))
    x, labels = jnp.asarray(x), jnp.asarray(labels)
    history = []
    for epoch in range(1, epochs + 1):
        key, pkey = jr.split(key)
        batches = jr.permutation(pkey, n)[: per_epoch * batch_size]
        batches = batches.reshape(per_epoch, batch_size)
        model, opt_state, losses = train_epoch(
            model, opt_state, x, labels, batches, optimiser
        )
        loss = float(jnp.mean(losses))
        history.append(loss)
        on_epoch(epoch, loss)
        if not np.isfinite(loss):
            return model, history, epoch
    return model, history, None


def _accuracy(model, x, labels):
    return jnp.mean(jnp.argmax(jax.vmap(model)(x), axis=-1) == labels)


@eqx.filter_jit
def measure(
    model: Classifier,
    x_train,
    y_train,
    x_test,
    y_test,
    *,
    noise: float,
    points: int,
    times: int,
    key: PRNGKeyArray,
) -> dict[str, Array]:
    """Every measurement of a trained classifier, in one compiled function.

    - `train_accuracy`, `test_accuracy`; `perturbed_accuracy`: test accuracy with
        Gaussian noise of standard deviation `noise` added to the inputs.
    - `sigma_max`, `lyapunov`: `neuralde.stability.flow_sensitivity` of the network
        (lifted state to final state) at the first `points` test points.
    - `gradient_norms`: `neuralde.stability.gradient_norms` of the cross-entropy,
        averaged over the first `points` test points: one entry per step and one for
        the input.
    - `eigenvalues`: `neuralde.stability.trajectory_spectrum` at `times` step times
        (the first, the last, and equally spaced ones between) along the
        trajectories of the first `points` test points; `amplification`:
        $|R(\\Delta t\\,\\lambda)|$ of the solver for each of them
        (`neuralde.stability.stability_function`).
    """
    nkey, fkey = jr.split(key)
    field, solver, steps = model.field, model.solver, model.steps
    noisy = x_test + noise * jr.normal(nkey, x_test.shape, x_test.dtype)
    xs, labels = x_test[:points], y_test[:points]
    y0 = jax.vmap(model.initial_state)(xs)

    def sensitivity(y0, key):
        return stability.flow_sensitivity(
            field, y0, steps=steps, solver=solver, key=key
        )

    flow = jax.vmap(sensitivity)(y0, jr.split(fkey, points))

    def profile(y0, label):
        def loss(y1):
            logits = model.readout(y1)
            return optax.softmax_cross_entropy_with_integer_labels(logits, label)

        return stability.gradient_norms(field, y0, loss, steps=steps, solver=solver)

    grads = jnp.mean(jax.vmap(profile)(y0, labels), axis=0)

    index = np.unique(np.linspace(0, steps, times).round().astype(int))
    ts = field.t1 * jnp.asarray(index / steps, xs.dtype)

    def spectrum(y0):
        return stability.trajectory_spectrum(field, y0, ts, steps=steps, solver=solver)

    eigenvalues = jax.vmap(spectrum)(y0)
    dt = field.t1 / steps
    amplification = jnp.abs(stability.stability_function(solver, dt * eigenvalues))
    return dict(
        train_accuracy=_accuracy(model, x_train, y_train),
        test_accuracy=_accuracy(model, x_test, y_test),
        perturbed_accuracy=_accuracy(model, noisy, y_test),
        sigma_max=flow.sigma_max,
        lyapunov=flow.lyapunov,
        gradient_norms=grads,
        eigenvalues=eigenvalues,
        amplification=amplification,
    )
