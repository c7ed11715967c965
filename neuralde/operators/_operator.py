import abc
import math
from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
from jaxtyping import Array, Float, Int, PRNGKeyArray

from .._checks import positive_int


class AbstractOperator(eqx.Module):
    """A linear operator $K$, the connectivity of a stable field.

    Subclasses implement `__call__` (the product $K x$ for one example) and
    `in_structure`; the transpose $K^\\top y$ is derived exactly by
    `jax.linear_transpose`, so it is never written by hand.

    Inside a field the floating-point array leaves carry a leading layer axis, and
    `at_layer(k)` selects layer `k`. Integer leaves (such as a graph's edge list) are
    shared by all layers.
    """

    @abc.abstractmethod
    def __call__(self, x: Array) -> Array:
        """$K x$, for one layer's parameters and one example."""

    @abc.abstractmethod
    def in_structure(self) -> jax.ShapeDtypeStruct:
        """Shape and dtype of one example's input $x$."""

    def T(self, y: Array) -> Array:
        """$K^\\top y$, the exact adjoint of `__call__`."""
        (x,) = jax.linear_transpose(self.__call__, self.in_structure())(y)
        return x

    def out_structure(self) -> jax.ShapeDtypeStruct:
        """Shape and dtype of $K x$ for one example."""
        return jax.eval_shape(self.__call__, self.in_structure())

    def bias_shape(self) -> tuple[int, ...]:
        """Shape of the bias $b$ that a field adds to $K x$.

        By default one entry per entry of $K x$. Operators with a symmetry override
        it, so that the bias keeps the symmetry: one entry per channel for a
        convolution (translation), one per feature for a graph (node permutation).
        """
        return self.out_structure().shape

    def at_layer(self, k: Int[Array, ""] | int) -> "AbstractOperator":
        """The operator with the parameters of layer `k`."""
        return jax.tree.map(lambda x: x[k] if eqx.is_inexact_array(x) else x, self)

    def num_layers(self) -> int:
        """The length of the leading layer axis of the floating-point leaves."""
        sizes = {
            x.shape[0] if x.ndim else None
            for x in jax.tree.leaves(self)
            if eqx.is_inexact_array(x)
        }
        if len(sizes) != 1 or None in sizes:
            raise ValueError(
                f"{type(self).__name__}: every floating-point parameter must carry "
                "the same leading layer axis; got leading sizes "
                f"{sorted(sizes, key=str)}. Build one operator per layer with "
                "`neuralde.operators.stack(make, layers=..., key=...)`."
            )
        return sizes.pop()


def stack(
    make: Callable[[PRNGKeyArray], AbstractOperator],
    *,
    layers: int,
    key: PRNGKeyArray,
) -> AbstractOperator:
    """One operator per layer, stacked on the leading layer axis that fields expect.

    **Arguments:**

    - `make`: `key -> operator`, building one layer's operator.
    - `layers`: how many layers. (Keyword only.)
    - `key`: PRNG key, split into one key per layer. (Keyword only.)

    **Returns:** the operator whose floating-point leaves carry a leading axis of
    length `layers`. Integer leaves, such as a graph's edge list, are built once and
    shared by all layers.

    !!! Example

        ```python
        make = lambda k: nde.operators.Dense(4, 8, key=k)
        K = nde.operators.stack(make, layers=10, key=key)
        field = nde.fields.Parabolic(operator=K, layers=10)
        ```
    """
    positive_int(layers, "layers")
    per_layer = lambda x: 0 if eqx.is_inexact_array(x) else None  # noqa: E731
    return eqx.filter_vmap(make, out_axes=per_layer)(jr.split(key, layers))


class Dense(AbstractOperator):
    """A dense matrix, $K x = W x$.

    `weight` has shape `(out_size, in_size)`; inside a field it is stacked over
    layers, `(layers, out_size, in_size)`.
    """

    weight: Float[Array, "*layers out_size in_size"]

    def __init__(
        self,
        in_size: int,
        out_size: int,
        *,
        dtype=None,
        key: PRNGKeyArray,
    ):
        """**Arguments:**

        - `in_size`, `out_size`: the operator maps `in_size` to `out_size` entries.
        - `dtype`: floating dtype of the weight (JAX's default float if `None`).
        - `key`: PRNG key. (Keyword only.)

        The weight is LeCun-normal, $W_{ij} \\sim \\mathcal N(0, 1/\\text{in\\_size})$,
        so that $Wx$ has unit variance for a unit-variance input.
        """
        in_size = positive_int(in_size, "in_size")
        out_size = positive_int(out_size, "out_size")
        dtype = jnp.result_type(float) if dtype is None else dtype
        std = 1.0 / math.sqrt(in_size)
        self.weight = std * jr.normal(key, (out_size, in_size), dtype)

    def __call__(self, x):
        return self.weight @ x

    def in_structure(self):
        return jax.ShapeDtypeStruct(self.weight.shape[-1:], self.weight.dtype)
