"""The study's loss, and the measurements of a trained classifier."""

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import optax
from jaxtyping import Array, Float, PRNGKeyArray

from .. import stability
from ._models import Classifier


def loss_fn(model: Classifier, x, labels) -> Float[Array, ""]:
    logits = jax.vmap(model)(x)
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()


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
