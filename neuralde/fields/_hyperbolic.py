import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

from ..operators import AbstractOperator
from ._base import (
    AbstractConservativeField,
    AbstractOperatorField,
    Activation,
    check_shape,
    check_two_streams,
    init_operator,
)


class Hyperbolic(AbstractConservativeField, AbstractOperatorField):
    """Second-order (wave-like) field, $\\ddot y = -K^\\top \\sigma(K y + b)$
    (Haber & Ruthotto 2017; Chang et al. 2018).

    It is integrated as the first-order system

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
        in_size: int | None = None,
        width_size: int | None = None,
        *,
        layers: int = 1,
        t1: float = 1.0,
        activation: Activation = jnp.tanh,
        operator: AbstractOperator | None = None,
        dtype=None,
        key: PRNGKeyArray | None = None,
    ):
        """**Arguments:**

        - `in_size`: size of the position $y$ (and of the velocity $v$).
        - `width_size`: rows of $K$ (`width_size x in_size`); may differ from `in_size`.
        - `layers`, `t1`, `activation`, `operator`, `dtype`, `key`: as for
            [`neuralde.fields.MLP`][]; here the operator may be rectangular.
        """
        self.operator, self.bias = init_operator(
            operator,
            in_size,
            width_size,
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

    @classmethod
    def example(cls, in_size, *, width_size=None, layers=1, t1=1.0, dtype=None, key):
        width_size = in_size if width_size is None else width_size
        return cls(in_size, width_size, layers=layers, t1=t1, dtype=dtype, key=key)

    def dy(self, t, v, args):
        check_shape("Hyperbolic (velocity)", v, self.state_shape())
        return v

    def dz(self, t, y, args):
        check_shape("Hyperbolic (position)", y, self.state_shape())
        K, s = self.preactivation(t, y)
        return -K.T(s)

    def energy(self, t, y, *, potential=None):
        """$E(y, v) = \\tfrac12 \\|v\\|^2 + \\mathbf 1^\\top \\Sigma(K y + b)$, with
        $\\Sigma' = \\sigma$ and $K$, $b$ the parameters of the layer of time `t`."""
        check_two_streams(type(self).__name__, y)
        y_, z_ = y
        return 0.5 * jnp.sum(z_**2) + self.potential_energy(t, y_, potential)
