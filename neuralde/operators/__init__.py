"""Linear operators $K$ with exact transposes: the connectivity of the stable fields
(dense, convolution, graph gradient), and the graph data type they act on.

An operator acts on one example; inside a field its floating-point parameters are
stacked over layers (`stack`) and `at_layer(k)` selects one. $K^\\top$ is derived by
`jax.linear_transpose`, so it is never written by hand.

Why not `lineax.AbstractLinearOperator` as the base: lineax's operators serve
linear solves (`lineax.linear_solve`), with a fixed input and output structure,
materialisation and tags (symmetric, positive definite). neuralde's operators
serve fields: they carry a leading layer axis (`at_layer`, `num_layers`) and the
shape of the bias that keeps their symmetry (`bias_shape`), neither of which lineax
models, and their transposes need no class of their own. One layer of any of them
is a lineax operator whenever a solve needs it:
`lineax.FunctionLinearOperator(op.at_layer(k), op.in_structure())`.
"""

from ._conv import Conv as Conv
from ._graph import batch as batch, Graph as Graph, segment_softmax as segment_softmax
from ._graph_gradient import GraphGradient as GraphGradient
from ._operator import (
    AbstractOperator as AbstractOperator,
    Dense as Dense,
    stack as stack,
)
