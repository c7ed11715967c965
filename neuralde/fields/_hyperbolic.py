import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

from ..operators import AbstractOperator
from ._base import (
    AbstractOperatorField,
    AbstractTwoStreamField,
    Activation,
    check_shape,
    init_operator,
)


class Hyperbolic(AbstractTwoStreamField, AbstractOperatorField):
    """Second-order (wave-like) field, $\\ddot y = -K^\\top \\sigma(K y + b)$
    (Haber & Ruthotto 2017; Chang et al. 2018), as the first-order system

    $\\dot y = v,\\qquad \\dot v = -K^\\top \\sigma(K y + b)$

    on the tuple state `(y, v)`. Leapfrog on it is the network
    $y_{n+1} = 2 y_n - y_{n-1} + \\Delta t^2 F(y_n)$, which can be run backwards
    exactly.

    ??? cite "Reference"
        ```bibtex
        @article{haber2017stable,
            title={Stable architectures for deep neural networks},
            author={Haber, Eldad and Ruthotto, Lars},
            journal={Inverse Problems},
            volume={34}, number={1}, pages={014004}, year={2017}
        }
        ```
    """

    operator: AbstractOperator
    bias: Float[Array, "layers ..."]
    activation: Activation = eqx.field(static=True)
    layers: int = eqx.field(static=True)
    t1: float = eqx.field(static=True)

    def __init__(
        self,
        dim: int | None = None,
        width: int | None = None,
        *,
        layers: int = 1,
        t1: float = 1.0,
        activation: Activation = jnp.tanh,
        operator: AbstractOperator | None = None,
        dtype=None,
        key: PRNGKeyArray | None = None,
    ):
        """**Arguments:**

        - `dim`: size of the position $y$ (and of the velocity $v$).
        - `width`: rows of $K$ (`width x dim`); may differ from `dim`.
        - `layers`, `t1`, `activation`, `operator`, `dtype`, `key`: as for
            [`neuralde.fields.MLP`][]; here the operator may be rectangular.
        """
        self.operator, self.bias = init_operator(
            operator,
            dim,
            width,
            square=False,
            layers=layers,
            t1=t1,
            dtype=dtype,
            key=key,
            name="Hyperbolic",
        )
        self.activation = activation
        self.layers = layers
        self.t1 = t1

    def dy(self, t, v, args):
        check_shape("Hyperbolic (velocity)", v, self.state_shape())
        return v

    def dz(self, t, y, args):
        check_shape("Hyperbolic (position)", y, self.state_shape())
        K, s = self.preactivation(t, y)
        return -K.T(s)
