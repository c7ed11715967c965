"""The conserved energy of Hamiltonian and hyperbolic fields, and its drift under a
solver."""

from collections.abc import Callable

import diffrax as dfx
import jax
import jax.numpy as jnp
import jax.random as jr
from jaxtyping import Array, ArrayLike, Float, PRNGKeyArray

from .._checks import positive_int
from ..fields import AbstractConservativeField
from ._common import FixedSteps


def energy(
    field: AbstractConservativeField,
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
    if not isinstance(field, AbstractConservativeField):
        raise TypeError(
            "`energy` needs a field that conserves one, a "
            "`neuralde.fields.AbstractConservativeField` (such as `Hamiltonian` or "
            f"`Hyperbolic`), got {type(field).__name__}."
        )
    return field.energy(t, y, potential=potential)


def energy_drift(
    field: AbstractConservativeField,
    y0: tuple[Float[Array, " dim"], Float[Array, " dim"]],
    *,
    t0: float = 0.0,
    t1: float | None = None,
    steps: int | None = None,
    dt0: float | None = None,
    solver: str | dfx.AbstractSolver = "leapfrog",
    args=None,
    potential: Callable[[Array], Array] | None = None,
    diffusion: Callable | None = None,
    paths: int = 64,
    key: PRNGKeyArray | None = None,
) -> Float[Array, ""] | Float[Array, " paths"]:
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
    - `diffusion`, `paths`, `key`: for a Hamiltonian drift with noise, the
        diffusion (as for [`neuralde.solve`][], with an SDE solver such as
        `"reversible_heun"`), the number of Brownian paths, and their key.

    **Returns:** the relative drift, a scalar; with `diffusion`, its distribution:
    one drift per path, shape `(paths,)`. (If $H(y_0) = 0$, the change is divided by
    the smallest normal float instead.)

    Works under `jax.jit` (`eqx.filter_jit`) and `jax.vmap`.
    """
    if not isinstance(field, AbstractConservativeField):
        raise TypeError(
            "`energy_drift` needs a field that conserves an energy, a "
            "`neuralde.fields.AbstractConservativeField` (such as `Hamiltonian` or "
            f"`Hyperbolic`); got {type(field).__name__}."
        )

    def drift(path_key) -> Array:
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
            diffusion=diffusion,
            key=path_key,
        )
        return _drift(run, field, y0, potential)

    if diffusion is None:
        if key is not None:
            raise ValueError("`key` draws Brownian paths: it needs `diffusion=`.")
        return drift(None)
    if key is None:
        raise ValueError("`energy_drift` with `diffusion` needs a PRNG `key=`.")
    positive_int(paths, "paths")
    return jax.vmap(drift)(jr.split(key, paths))


def _drift(run: FixedSteps, field, y0, potential) -> Array:
    def observe(t, y):
        return energy(field, t, y, potential=potential)

    jax.eval_shape(observe, run.t0, y0)  # a missing `potential` fails here

    _, energies = run.trajectory(y0, observe=observe)
    tiny = jnp.finfo(energies.dtype).tiny
    change = jnp.max(jnp.abs(energies - energies[0]))
    return change / jnp.maximum(jnp.abs(energies[0]), tiny)
