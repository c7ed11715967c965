import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

from ..operators import AbstractOperator
from ._base import AbstractOperatorField, Activation, check_shape, init_operator


class Antisymmetric(AbstractOperatorField):
    """Antisymmetric field, $F(t, y) = \\sigma((K - K^\\top - \\gamma I)\\, y + b)$
    (Haber & Ruthotto 2017).

    The Jacobian is $\\operatorname{diag}(\\sigma')(K - K^\\top - \\gamma I)$. For a
    monotone $\\sigma$ its eigenvalues have real part at most
    $-\\gamma \\min \\sigma' \\le 0$, and they are purely imaginary for $\\gamma = 0$:
    the continuous flow neither explodes nor vanishes. Forward Euler needs
    $\\gamma > 0$ to be stable on it.

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
    gamma: float = eqx.field(static=True)
    activation: Activation = eqx.field(static=True)
    layers: int = eqx.field(static=True)
    t1: float = eqx.field(static=True)

    def __init__(
        self,
        in_size: int | None = None,
        *,
        gamma: float = 0.01,
        layers: int = 1,
        t1: float = 1.0,
        activation: Activation = jnp.tanh,
        operator: AbstractOperator | None = None,
        dtype=None,
        key: PRNGKeyArray | None = None,
    ):
        """**Arguments:**

        - `in_size`: size of the state.
        - `gamma`: the damping $\\gamma \\ge 0$. Default `0.01`, the small positive
            value that makes forward Euler stable for small steps.
        - `layers`, `t1`, `activation`, `operator`, `dtype`, `key`: as for
            [`neuralde.fields.MLP`][].
        """
        if not gamma >= 0:
            raise ValueError(f"Antisymmetric: `gamma` must be >= 0, got {gamma!r}.")
        self.operator, self.bias = init_operator(
            operator,
            in_size,
            None,
            square=True,
            layers=layers,
            t1=t1,
            dtype=dtype,
            key=key,
            name="Antisymmetric",
        )
        self.gamma = gamma
        self.activation = activation
        self.layers = layers
        self.t1 = t1

    @classmethod
    def example(cls, in_size, *, width_size=None, layers=1, t1=1.0, dtype=None, key):
        return cls(in_size, layers=layers, t1=t1, dtype=dtype, key=key)

    def __call__(self, t, y, args):
        check_shape("Antisymmetric", y, self.state_shape())
        k = self.layer(t)
        K = self.operator.at_layer(k)
        return self.activation(K(y) - K.T(y) - self.gamma * y + self.bias[k])
