"""Antiderivatives of activations, for the energies of conservative fields."""

from collections.abc import Callable

import jax
import jax.numpy as jnp
from jaxtyping import Array


def _log_cosh(x):
    # log cosh x = |x| + log(1 + e^{-2|x|}) - log 2, without overflow for large |x|.
    a = jnp.abs(x)
    return a + jnp.log1p(jnp.exp(-2 * a)) - jnp.log(2.0).astype(a.dtype)


def _half_square(x):
    return 0.5 * x**2


def _half_square_relu(x):
    return 0.5 * jax.nn.relu(x) ** 2


# Antiderivatives Sigma (Sigma' = sigma, Sigma(0) = 0) of the known activations.
_POTENTIALS = (
    (jnp.tanh, _log_cosh),
    (jax.lax.tanh, _log_cosh),
    (jax.nn.relu, _half_square_relu),
    (jax.nn.identity, _half_square),
)


def potential_of(
    activation: Callable[[Array], Array], potential: Callable[[Array], Array] | None
) -> Callable[[Array], Array]:
    """$\\Sigma$ with $\\Sigma' = $ `activation`, $\\Sigma(0) = 0$: `potential` if
    given, else the known antiderivative of `activation`."""
    if potential is not None:
        if not callable(potential):
            raise TypeError(f"`potential` must be a function, got {potential!r}.")
        return potential
    for known, antiderivative in _POTENTIALS:
        if activation is known:
            return antiderivative
    raise ValueError(
        f"No antiderivative is known for the activation {activation!r}: "
        "energy needs Sigma with Sigma' = activation. Known: jnp.tanh, jax.nn.relu, "
        "jax.nn.identity; for another activation pass `potential=Sigma`."
    )
