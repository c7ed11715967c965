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


class Hamiltonian(AbstractConservativeField, AbstractOperatorField):
    """Two-stream Hamiltonian field (Chang et al. 2018),

    $\\dot y = K^\\top \\sigma(K z + b),\\qquad \\dot z = -K^\\top \\sigma(K y + b)$.

    It is Hamiltonian with $H(y, z) = \\mathbf 1^\\top \\Sigma(K y + b) +
    \\mathbf 1^\\top \\Sigma(K z + b)$, $\\Sigma' = \\sigma$, so its flow preserves
    volume, and symplectic Euler and leapfrog on it are reversible. The state is the
    tuple `(y, z)`.

    ??? cite "Reference"
        ```bibtex
        @inproceedings{chang2018reversible,
            title={Reversible architectures for arbitrarily deep residual neural
                   networks},
            author={Chang, Bo and Meng, Lili and Haber, Eldad and Ruthotto, Lars and
                    Begert, David and Holtham, Elliot},
            booktitle={AAAI Conference on Artificial Intelligence},
            year={2018}
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

        - `in_size`: size of each of the two streams.
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
            name="Hamiltonian",
        )
        self.activation = activation
        self.layers = layers
        self.t1 = t1

    @classmethod
    def example(cls, in_size, *, width_size=None, layers=1, t1=1.0, dtype=None, key):
        width_size = in_size if width_size is None else width_size
        return cls(in_size, width_size, layers=layers, t1=t1, dtype=dtype, key=key)

    def dy(self, t, z, args):
        check_shape("Hamiltonian (stream z)", z, self.state_shape())
        K, s = self.preactivation(t, z)
        return K.T(s)

    def dz(self, t, y, args):
        check_shape("Hamiltonian (stream y)", y, self.state_shape())
        K, s = self.preactivation(t, y)
        return -K.T(s)

    def energy(self, t, y, *, potential=None):
        """$H(y, z) = \\mathbf 1^\\top \\Sigma(K y + b) +
        \\mathbf 1^\\top \\Sigma(K z + b)$ (Chang et al. 2018), with
        $\\Sigma' = \\sigma$ and $K$, $b$ the parameters of the layer of time `t`."""
        check_two_streams(type(self).__name__, y)
        y_, z_ = y
        return self.potential_energy(t, y_, potential) + self.potential_energy(
            t, z_, potential
        )
