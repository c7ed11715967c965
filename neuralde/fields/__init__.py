from ._antisymmetric import Antisymmetric as Antisymmetric
from ._attention import Attention as Attention
from ._base import (
    AbstractField as AbstractField,
    AbstractOperatorField as AbstractOperatorField,
    AbstractTwoStreamField as AbstractTwoStreamField,
    layer_index as layer_index,
)
from ._conv import Conv as Conv
from ._graph import GRAND as GRAND, GraphCON as GraphCON, GraphGradient as GraphGradient
from ._hamiltonian import Hamiltonian as Hamiltonian
from ._hyperbolic import Hyperbolic as Hyperbolic
from ._mlp import MLP as MLP
from ._operator import (
    AbstractOperator as AbstractOperator,
    Dense as Dense,
    stack as stack,
)
from ._parabolic import Parabolic as Parabolic
