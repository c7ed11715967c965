import math

import jax
import jax.numpy as jnp
import jax.random as jr
from jaxtyping import Array, Float, PRNGKeyArray

from ._graph import check_graph, Graph
from ._operator import AbstractOperator


class GraphGradient(AbstractOperator):
    """The graph gradient with learned feature mixing, $K X = G X W^\\top$: for each
    edge $v \\to u$ the difference $\\sqrt{w}\\,(x_u - x_v)W^\\top$ of the mixed
    node features. Its transpose $K^\\top$ is the graph divergence $G^\\top Y W$.

    In the stable fields this gives graph PDEs (Eliasof, Haber & Treister 2021):
    `Parabolic` is a nonlinear graph diffusion $-G^\\top\\sigma(G X W^\\top + b)W$,
    `Hamiltonian` and `Hyperbolic` are graph wave equations. With $W = I$ and
    $\\sigma$ the identity, $-K^\\top K = -2L$: the heat equation on the graph.

    The node features of one example are `(num_nodes, in_size)`, and $K X$ is
    `(num_edges, out_size)`. The graph's edge list is shared by all layers; the
    field's bias is one per output feature, so the field is permutation equivariant.
    """

    weight: Float[Array, "*layers out_size in_size"]
    graph: Graph

    def __init__(
        self,
        graph: Graph,
        in_size: int,
        out_size: int,
        *,
        dtype=None,
        key: PRNGKeyArray,
    ):
        """**Arguments:**

        - `graph`: the `neuralde.operators.Graph` the features live on.
        - `in_size`, `out_size`: feature sizes per node and per edge.
        - `dtype`: floating dtype of $W$. `key`: PRNG key. (Keyword only.)

        $W$ is LeCun-normal, as for [`neuralde.operators.Dense`][].
        """
        check_graph("GraphGradient", graph)
        dtype = jnp.result_type(float) if dtype is None else dtype
        std = 1.0 / math.sqrt(in_size)
        self.weight = std * jr.normal(key, (out_size, in_size), dtype)
        self.graph = graph

    def __call__(self, x):
        if self.weight.ndim != 2:
            raise ValueError(
                "GraphGradient: one layer's weight has shape (out_size, "
                f"in_size), but this operator's is {self.weight.shape}. A stacked "
                "operator is applied one layer at a time: use `operator.at_layer(k)`."
            )
        return self.graph.gradient(x @ self.weight.T)

    def num_layers(self) -> int:
        if self.weight.ndim == 2:
            raise ValueError(
                "GraphGradient: this operator is unstacked (weight of shape "
                f"{self.weight.shape}); a field needs one weight per layer. Build it "
                "with `neuralde.operators.stack`, e.g. `stack(lambda k: GraphGradient("
                "graph, d_in, d_out, key=k), layers=layers, key=key)`."
            )
        return super().num_layers()

    def in_structure(self):
        shape = (self.graph.num_nodes, self.weight.shape[-1])
        return jax.ShapeDtypeStruct(shape, self.weight.dtype)

    def bias_shape(self):
        return self.weight.shape[-2:-1]
