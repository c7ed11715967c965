"""The conserved energy of Hamiltonian and hyperbolic fields, and its drift under a
solver."""

from collections.abc import Callable

import diffrax as dfx
import jax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float

from ..fields import Hamiltonian, Hyperbolic
from ._common import FixedSteps


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


def _potential(field, potential):
    if potential is not None:
        if not callable(potential):
            raise TypeError(f"`potential` must be a function, got {potential!r}.")
        return potential
    for activation, antiderivative in _POTENTIALS:
        if field.activation is activation:
            return antiderivative
    raise ValueError(
        f"No antiderivative is known for the activation {field.activation!r}: "
        "energy needs Sigma with Sigma' = activation. Known: jnp.tanh, jax.nn.relu, "
        "jax.nn.identity; for another activation pass `potential=Sigma`."
    )


def energy(
    field: Hamiltonian | Hyperbolic,
    t: ArrayLike,
    y: tuple[Float[Array, " dim"], Float[Array, " dim"]],
    *,
    potential: Callable[[Array], Array] | None = None,
) -> Float[Array, ""]:
    """The energy of a two-stream state, conserved by the flow of a field with
    constant parameters (`layers=1`):

    - `Hamiltonian`: $H(y, z) = \\mathbf 1^\\top \\Sigma(K y + b) +
        \\mathbf 1^\\top \\Sigma(K z + b)$ (Chang et al. 2018);
    - `Hyperbolic`: $E(y, v) = \\tfrac12 \\|v\\|^2 + \\mathbf 1^\\top \\Sigma(K y + b)$;

    with $\\Sigma' = \\sigma$ the antiderivative of the activation, and $K$, $b$ the
    parameters of the layer of time `t`.

    **Arguments:**

    - `field`: a `neuralde.fields.Hamiltonian` or `Hyperbolic`.
    - `t`: the time, which selects the layer.
    - `y`: the state `(y, z)` (for `Hyperbolic`: position and velocity).
    - `potential`: $\\Sigma$, elementwise. Default: derived from the field's
        activation: $\\log\\cosh$ for `jnp.tanh` (computed without overflow),
        $\\tfrac12 \\max(x, 0)^2$ for `jax.nn.relu`, $\\tfrac12 x^2$ for
        `jax.nn.identity`; any other activation raises a `ValueError` and needs
        `potential=`. (Keyword only.)

    **Returns:** the energy, a scalar.
    """
    if not isinstance(field, Hamiltonian | Hyperbolic):
        raise TypeError(
            "`energy` knows the conserved quantity of `neuralde.fields.Hamiltonian` "
            f"and `Hyperbolic` fields, got {type(field).__name__}."
        )
    if not (isinstance(y, tuple) and len(y) == 2):
        raise TypeError(
            f"{type(field).__name__} is a two-stream field: its state is a tuple "
            "`(y, z)`."
        )
    sigma = _potential(field, potential)
    k = field.layer(t)
    K = field.operator.at_layer(k)
    b = field.bias[k]
    y_, z_ = y
    if isinstance(field, Hamiltonian):
        return jnp.sum(sigma(K(y_) + b)) + jnp.sum(sigma(K(z_) + b))
    return 0.5 * jnp.sum(z_**2) + jnp.sum(sigma(K(y_) + b))


def energy_drift(
    field: Hamiltonian | Hyperbolic,
    y0: tuple[Float[Array, " dim"], Float[Array, " dim"]],
    *,
    t0: float = 0.0,
    t1: float | None = None,
    steps: int | None = None,
    dt0: float | None = None,
    solver: str | dfx.AbstractSolver = "leapfrog",
    args=None,
    potential: Callable[[Array], Array] | None = None,
) -> Float[Array, ""]:
    """The largest relative change of the [`neuralde.stability.energy`][] along a
    fixed-step solve, $\\max_j |H(y_j) - H(y_0)| / |H(y_0)|$ over every step time
    $t_j$.

    The exact flow conserves $H$ only when the parameters are constant in time
    (`layers=1`); with more layers $H$ changes at the layer boundaries, and this
    measures that change too. Symplectic solvers (`symplectic_euler`, `leapfrog`)
    keep the drift bounded, $O(\\Delta t)$ and $O(\\Delta t^2)$, over long times;
    Runge–Kutta methods drift steadily.

    **Arguments:**

    - `field`: a `neuralde.fields.Hamiltonian` or `Hyperbolic`.
    - `y0`: the initial state `(y0, z0)`.
    - `t0`, `t1`, `steps`, `dt0`, `solver`, `args`: as for [`neuralde.solve`][],
        with fixed steps (`steps=` or `dt0=`). Default solver: `"leapfrog"`.
    - `potential`: as for [`neuralde.stability.energy`][].

    **Returns:** the relative drift, a scalar. (If $H(y_0) = 0$, the change is
    divided by the smallest normal float instead.)

    Works under `jax.jit` (`eqx.filter_jit`) and `jax.vmap`.
    """
    if not isinstance(field, Hamiltonian | Hyperbolic):
        raise TypeError(
            "`energy_drift` needs a `neuralde.fields.Hamiltonian` or `Hyperbolic` "
            f"field, whose energy it knows; got {type(field).__name__}."
        )
    _potential(field, potential)
    run = FixedSteps(
        field,
        y0,
        t0=t0,
        t1=t1,
        steps=steps,
        dt0=dt0,
        solver=solver,
        args=args,
        name="energy_drift",
    )

    def observe(t, y):
        return energy(field, t, y, potential=potential)

    _, energies = run.trajectory(y0, observe=observe)
    tiny = jnp.finfo(energies.dtype).tiny
    change = jnp.max(jnp.abs(energies - energies[0]))
    return change / jnp.maximum(jnp.abs(energies[0]), tiny)
