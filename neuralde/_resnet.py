from jaxtyping import Array, PyTree

from ._checks import positive_int
from ._solve import solve
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

    written as one `lax.scan` over the layers: it is
    `solve(field, y0, t1=t1, solver="euler", steps=layers)`.

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
    return solve(field, y0, t1=t1, steps=layers, solver="euler", args=args)
