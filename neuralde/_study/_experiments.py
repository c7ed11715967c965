"""The two side experiments of the study: the 2-D residual networks of three fixed
weight matrices, and the gradients of discretize-optimize against
optimize-discretize."""

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
from jax.flatten_util import ravel_pytree
from jaxtyping import PRNGKeyArray

from .. import fields, stability
from .._solve import solve
from ._models import DTYPE


# h_{j+1} = h_j + 0.1 tanh(W h_j), 20 layers: a flow that turns, contracts, expands.
EXAMPLE_WEIGHTS = {
    "rotation": [[0.0, -1.0], [1.0, 0.0]],
    "contracting": [[-2.0, 0.0], [2.0, -2.0]],
    "expanding": [[2.0, -2.0], [0.0, 2.0]],
}
EXAMPLE_LAYERS = 20
EXAMPLE_T1 = 2.0


def example_field(weight, *, layers=EXAMPLE_LAYERS, t1=EXAMPLE_T1, dtype=DTYPE):
    """The MLP field with the same `weight` in every layer and zero bias."""
    field = fields.MLP(2, layers=layers, t1=t1, dtype=dtype, key=jr.PRNGKey(0))
    weight = jnp.tile(jnp.asarray(weight, dtype), (layers, 1, 1))
    field = eqx.tree_at(lambda f: f.operator.weight, field, weight)
    return eqx.tree_at(lambda f: f.bias, field, jnp.zeros_like(field.bias))


@eqx.filter_jit
def _example_run(field, y0, key):
    times = jnp.linspace(0.0, EXAMPLE_T1, EXAMPLE_LAYERS + 1, dtype=y0.dtype)

    def one(y0, key):
        path = solve(field, y0, steps=EXAMPLE_LAYERS, solver="euler", ts=times)
        flow = stability.flow_sensitivity(
            field, y0, steps=EXAMPLE_LAYERS, solver="euler", key=key
        )
        return path, flow.sigma_max

    return jax.vmap(one)(y0, jr.split(key, y0.shape[0]))


def example_2d(*, grid: int, key: PRNGKeyArray) -> dict:
    """Trajectories of a `grid x grid` lattice of initial points in $[-1, 1]^2$ under
    each of the three networks, and their flow sensitivity $M$ at each point.

    Returns, per weight name: `weight`, `trajectories` (points, layers + 1, 2),
    `sigma_max` (points,), and its median and maximum.
    """
    line = np.linspace(-1.0, 1.0, grid)
    y0 = jnp.asarray(np.stack(np.meshgrid(line, line), -1).reshape(-1, 2), DTYPE)
    out = {}
    for name, weight in EXAMPLE_WEIGHTS.items():
        paths, sigma = _example_run(example_field(weight), y0, key)
        sigma = np.asarray(sigma)
        out[name] = dict(
            weight=weight,
            trajectories=np.asarray(paths),
            sigma_max=sigma,
            sigma_max_median=float(np.median(sigma)),
            sigma_max_max=float(np.max(sigma)),
        )
    return out


@eqx.filter_jit
def _gradients(field, y0, steps):
    """The gradient of $\\frac12 \\|y(T)\\|^2$ (mean over `y0`) with respect to the
    field's parameters, by discretize-optimize and by the continuous adjoint."""

    def grad(gradient):
        # `batched=True` rather than `jax.vmap`: the adjoint's backward solve sees the
        # whole batch, and compiles in about half the time.
        def loss(field):
            y1 = solve(
                field, y0, steps=steps, solver="rk4", gradient=gradient, batched=True
            )
            return 0.5 * jnp.sum(y1**2) / y0.shape[0]

        g = eqx.filter_grad(loss)(field)
        return ravel_pytree(eqx.filter(g, eqx.is_inexact_array))[0]

    return grad("discretize"), grad("adjoint")


def do_vs_od(steps: tuple[int, ...], *, key: PRNGKeyArray) -> dict:
    """Relative error $\\|g_\\text{adjoint} - g_\\text{discretize}\\| /
    \\|g_\\text{discretize}\\|$ of the parameter gradient against the number of `rk4`
    steps, for a stable and an unstable field: the 2-D example's contracting and
    expanding `MLP`s over $[0, 2]$, from 8 random points in $[-1, 1]^2$.

    In float64 (scoped with `jax.enable_x64`), so that the error can fall below
    float32's round-off. Both fields are constant in time (`layers=1`), so that RK4
    stages never straddle a layer boundary and keep their fourth order
    (docs/concepts.md); being of one structure, they share one compilation per step
    count.
    """
    with jax.enable_x64(True):
        dtype = jnp.float64
        cases = {
            f"{w} W ({kind})": example_field(EXAMPLE_WEIGHTS[w], layers=1, dtype=dtype)
            for w, kind in (("contracting", "stable"), ("expanding", "unstable"))
        }
        y0 = jr.uniform(key, (8, 2), dtype, -1.0, 1.0)
        errors = {name: [] for name in cases}
        for n in steps:
            for name, field in cases.items():
                g_do, g_od = _gradients(field, y0, n)
                err = jnp.linalg.norm(g_od - g_do) / jnp.linalg.norm(g_do)
                errors[name].append(float(err))
    return dict(steps=list(steps), solver="rk4", relative_error=errors)
