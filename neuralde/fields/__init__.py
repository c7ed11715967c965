from ._antisymmetric import Antisymmetric as Antisymmetric
from ._attention import Attention as Attention
from ._base import (
    AbstractConservativeField as AbstractConservativeField,
    AbstractField as AbstractField,
    AbstractOperatorField as AbstractOperatorField,
    AbstractTwoStreamField as AbstractTwoStreamField,
    layer_index as layer_index,
)
from ._graph import GRAND as GRAND, GraphCON as GraphCON
from ._hamiltonian import Hamiltonian as Hamiltonian
from ._hyperbolic import Hyperbolic as Hyperbolic
from ._mlp import MLP as MLP
from ._parabolic import Parabolic as Parabolic
