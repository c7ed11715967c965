import jax
import jax.numpy as jnp
import jax.tree_util as jtu
import numpy as np
from jaxtyping import Array, PyTree

from ._checks import positive_int
from ._solve import check_field_output
from ._steps import all_finite, raise_if_nonfinite, step_grid
from .fields import AbstractField


def resnet(
    field: AbstractField,
    y0: PyTree[Array],
    *,
    t1: float | None = None,
    layers: int | None = None,
    args: PyTree = None,
) -> PyTree[Array]:
    """The discrete network: explicit Euler with one step per layer,

    $h_{j+1} = h_j + \\Delta t\\, F_{\\theta_j}(t_j, h_j)$, $\\Delta t = t_1/L$,

    written as one `lax.scan` over the layers. It equals
    `solve(field, y0, solver="euler", steps=layers)` to round-off, and is the fast
    path for that case.

    **Arguments:**

    - `field`: a `neuralde.fields` field (or any field with `layers` and `t1`).
    - `y0`: the input of one example (batch with `jax.vmap`).
    - `t1`: the depth in time. Default: the field's `t1`.
    - `layers`: the number of residual layers. Default: the field's `layers`, one
        step per parameter layer.
    - `args`: passed to `field`.

    **Returns:** $h_L$, shaped like `y0`.
    """
    t1 = field.t1 if t1 is None else t1
    layers = field.layers if layers is None else layers
    layers = positive_int(layers, "layers")
    leaves = jtu.tree_leaves(y0)
    dtype = jnp.result_type(*leaves)
    if not jnp.issubdtype(dtype, jnp.floating):
        raise TypeError(f"The input must be floating point, got dtype {dtype}.")
    grid = step_grid(np.zeros((), dtype), np.asarray(t1, dtype), layers, None, dtype)
    times = grid.times()
    check_field_output(field, times[0], y0, args)

    def layer(carry, x):
        h, bad = carry
        j, t, dt = x
        f = field(t, h, args)
        h = jtu.tree_map(lambda a, b: a + dt * b, h, f)
        bad = jnp.where((bad == layers) & ~all_finite(h), j, bad)
        return (h, bad), None

    layer = jax.checkpoint(layer, prevent_cse=False)  # as in `solve`'s scan
    xs = (jnp.arange(layers), times[:-1], jnp.diff(times))
    (h, bad), _ = jax.lax.scan(layer, (y0, jnp.asarray(layers)), xs)
    return raise_if_nonfinite(h, bad, grid)
