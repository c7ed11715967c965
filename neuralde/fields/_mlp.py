import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

from ..operators import AbstractOperator
from ._base import AbstractOperatorField, Activation, check_shape, init_operator


class MLP(AbstractOperatorField):
    """The plain neural ODE, $F(t, y) = \\sigma(K(t)\\, y + b(t))$.

    Explicit Euler on it, one step per layer, is the residual network
    $h_{j+1} = h_j + \\Delta t\\, \\sigma(W_j h_j + b_j)$ (see `neuralde.resnet`).
    Nothing in its structure makes it stable: it is the baseline the other fields are
    compared against.
    """

    operator: AbstractOperator
    bias: Float[Array, "layers ..."]
    activation: Activation = eqx.field(static=True)
    layers: int = eqx.field(static=True)
    t1: float = eqx.field(static=True)

    def __init__(
        self,
        in_size: int | None = None,
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
        - `layers`: number of piecewise-constant layers over `[0, t1]`; `1` means
            constant in time.
        - `t1`: the end of the field's time interval.
        - `activation`: $\\sigma$, applied elementwise. Default `jnp.tanh`.
        - `operator`: a square `AbstractOperator` stacked over `layers`, in place of
            the default `Dense` one (then `in_size` may be omitted).
        - `dtype`: floating dtype of the parameters.
        - `key`: PRNG key for the default operator. (Keyword only.)

        Default initialisation: $K$ LeCun-normal, independently per layer; $b = 0$.
        """
        self.operator, self.bias = init_operator(
            operator,
            in_size,
            None,
            square=True,
            layers=layers,
            t1=t1,
            dtype=dtype,
            key=key,
            name="MLP",
        )
        self.activation = activation
        self.layers = layers
        self.t1 = t1

    @classmethod
    def example(cls, in_size, *, width_size=None, layers=1, t1=1.0, dtype=None, key):
        return cls(in_size, layers=layers, t1=t1, dtype=dtype, key=key)

    def __call__(self, t, y, args):
        check_shape("MLP", y, self.state_shape())
        return self.preactivation(t, y)[1]
