import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

from ..operators import AbstractOperator
from ._base import AbstractOperatorField, Activation, check_shape, init_operator


class Parabolic(AbstractOperatorField):
    """Parabolic (diffusion-like) field, $F(t, y) = -K^\\top \\sigma(K y + b)$
    (Ruthotto & Haber 2020).

    For a monotone non-decreasing $\\sigma$ the Jacobian
    $-K^\\top \\operatorname{diag}(\\sigma') K$ is symmetric negative semi-definite,
    so the flow is forward-stable: perturbations do not grow.

    ??? cite "Reference"
        ```bibtex
        @article{ruthotto2020deep,
            title={Deep neural networks motivated by partial differential equations},
            author={Ruthotto, Lars and Haber, Eldad},
            journal={Journal of Mathematical Imaging and Vision},
            volume={62}, pages={352--364}, year={2020}
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

        - `in_size`: size of the state.
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
            name="Parabolic",
        )
        self.activation = activation
        self.layers = layers
        self.t1 = t1

    @classmethod
    def example(cls, in_size, *, width_size=None, layers=1, t1=1.0, dtype=None, key):
        width_size = in_size if width_size is None else width_size
        return cls(in_size, width_size, layers=layers, t1=t1, dtype=dtype, key=key)

    def __call__(self, t, y, args):
        check_shape("Parabolic", y, self.state_shape())
        K, s = self.preactivation(t, y)
        return -K.T(s)
