import math

import equinox as eqx
import jax.numpy as jnp
import jax.random as jr
from jaxtyping import Array, Float, PRNGKeyArray

from ..operators import Graph, segment_softmax
from ..operators._graph import check_graph
from ._base import (
    AbstractField,
    Activation,
    check_activation,
    check_layers,
    check_shape,
)


class GRAND(AbstractField):
    """Graph neural diffusion (Chamberlain et al. 2021), $\\dot X = (A(X) - I) X$.

    Here $A$ is the attention-weighted adjacency

    $A(X)_{uv} = \\operatorname{softmax}_{v \\to u}
    \\big((W_K x_u)^\\top W_Q x_v / d_k\\big)$

    over the in-neighbours of $u$. Each row of $A$ sums to one, so $\\dot x_u$ is a
    weighted average of the differences $x_v - x_u$: a diffusion, which obeys the
    maximum principle (no feature leaves the range of its initial values). Nodes
    without in-neighbours do not move. $W_K, W_Q$ are piecewise constant in time
    over `layers`; the state is the node features `(num_nodes, in_size)`.

    ??? cite "Reference"
        ```bibtex
        @inproceedings{chamberlain2021grand,
            title={GRAND: Graph Neural Diffusion},
            author={Chamberlain, Ben and Rowbottom, James and Gorinova, Maria I. and
                    Bronstein, Michael and Webb, Stefan and Rossi, Emanuele},
            booktitle={International Conference on Machine Learning},
            pages={1407--1418}, year={2021}
        }
        ```
    """

    graph: Graph
    key_weight: Float[Array, "layers key_size in_size"]
    query_weight: Float[Array, "layers key_size in_size"]
    layers: int = eqx.field(static=True)
    t1: float = eqx.field(static=True)

    def __init__(
        self,
        graph: Graph,
        in_size: int,
        *,
        key_size: int | None = None,
        layers: int = 1,
        t1: float = 1.0,
        dtype=None,
        key: PRNGKeyArray,
    ):
        """**Arguments:**

        - `graph`: the `neuralde.operators.Graph` the features diffuse on.
        - `in_size`: the size of each node's features.
        - `key_size`: $d_k$, rows of $W_K$ and $W_Q$ (default `in_size`).
        - `layers`, `t1`, `dtype`, `key`: as for [`neuralde.fields.MLP`][].
        """
        check_graph("GRAND", graph)
        check_layers(layers, t1)
        key_size = in_size if key_size is None else key_size
        dtype = jnp.result_type(float) if dtype is None else dtype
        kkey, qkey = jr.split(key)
        shape = (layers, key_size, in_size)
        std = 1.0 / math.sqrt(in_size)
        self.key_weight = std * jr.normal(kkey, shape, dtype)
        self.query_weight = std * jr.normal(qkey, shape, dtype)
        self.graph = graph
        self.layers = layers
        self.t1 = t1

    def attention(self, t, x: Float[Array, "nodes in_size"]) -> Array:
        """The weights $A(X)_{uv}$ of the layer of time `t`, one per edge."""
        k = self.layer(t)
        keys = x @ self.key_weight[k].T
        queries = x @ self.query_weight[k].T
        g = self.graph
        logits = jnp.sum(keys[g.receivers] * queries[g.senders], axis=-1)
        logits = logits / self.key_weight.shape[1]
        return segment_softmax(logits, g.receivers, g.num_nodes)

    @classmethod
    def example(cls, in_size, *, width_size=None, layers=1, t1=1.0, dtype=None, key):
        """On the 6 x 6 periodic grid graph (`Graph.torus(6)`)."""
        graph = Graph.torus(6)
        return cls(
            graph,
            in_size,
            key_size=width_size,
            layers=layers,
            t1=t1,
            dtype=dtype,
            key=key,
        )

    def state_shape(self) -> tuple[int, ...]:
        return (self.graph.num_nodes, self.key_weight.shape[-1])

    def __call__(self, t, y, args):
        check_shape("GRAND", y, self.state_shape())
        g = self.graph
        a = self.attention(t, y)
        return g.aggregate(a[:, None] * (y[g.senders] - y[g.receivers]))


class GraphCON(AbstractField):
    """Graph-coupled oscillators (Rusch et al. 2022),
    $\\ddot X = \\sigma(\\hat A X W + b) - \\gamma X - \\alpha \\dot X$,

    with $\\hat A$ the GCN propagation of the graph. It is integrated as the
    first-order system $\\dot X = Y$, $\\dot Y = \\sigma(\\hat A X W + b) - \\gamma X
    - \\alpha Y$ on the state `(X, Y)`, two arrays of shape `(num_nodes, in_size)`.
    The oscillator structure keeps the node features from collapsing to one value
    (no oversmoothing). $W, b$ are piecewise constant in time over `layers`.

    ??? cite "Reference"
        ```bibtex
        @inproceedings{rusch2022graph,
            title={Graph-Coupled Oscillator Networks},
            author={Rusch, T. Konstantin and Chamberlain, Ben and Rowbottom, James and
                    Mishra, Siddhartha and Bronstein, Michael},
            booktitle={International Conference on Machine Learning},
            pages={18888--18909}, year={2022}
        }
        ```
    """

    graph: Graph
    weight: Float[Array, "layers in_size in_size"]
    bias: Float[Array, "layers in_size"]
    gamma: float = eqx.field(static=True)
    alpha: float = eqx.field(static=True)
    activation: Activation = eqx.field(static=True)
    layers: int = eqx.field(static=True)
    t1: float = eqx.field(static=True)

    def __init__(
        self,
        graph: Graph,
        in_size: int,
        *,
        gamma: float = 1.0,
        alpha: float = 1.0,
        layers: int = 1,
        t1: float = 1.0,
        activation: Activation = jnp.tanh,
        dtype=None,
        key: PRNGKeyArray,
    ):
        """**Arguments:**

        - `graph`: the `neuralde.operators.Graph` of the oscillators.
        - `in_size`: the size of each node's features.
        - `gamma`: stiffness $\\gamma \\ge 0$; `alpha`: damping $\\alpha \\ge 0$.
        - `layers`, `t1`, `activation`, `dtype`, `key`: as for
            [`neuralde.fields.MLP`][].
        """
        check_graph("GraphCON", graph)
        check_layers(layers, t1)
        if not (gamma >= 0 and alpha >= 0):
            raise ValueError(
                f"GraphCON needs gamma >= 0 and alpha >= 0, got {gamma}, {alpha}."
            )
        dtype = jnp.result_type(float) if dtype is None else dtype
        std = 1.0 / math.sqrt(in_size)
        self.weight = std * jr.normal(key, (layers, in_size, in_size), dtype)
        self.bias = jnp.zeros((layers, in_size), dtype)
        self.graph = graph
        self.gamma = gamma
        self.alpha = alpha
        check_activation("GraphCON", activation)
        self.activation = activation
        self.layers = layers
        self.t1 = t1

    @classmethod
    def example(cls, in_size, *, width_size=None, layers=1, t1=1.0, dtype=None, key):
        """On the 6 x 6 periodic grid graph (`Graph.torus(6)`)."""
        graph = Graph.torus(6)
        return cls(graph, in_size, layers=layers, t1=t1, dtype=dtype, key=key)

    def initial_state(self, y):
        """`(y, 0)`: the oscillators start at rest."""
        return y, jnp.zeros_like(y)

    def state_shape(self) -> tuple[int, ...]:
        return (self.graph.num_nodes, self.weight.shape[-1])

    def __call__(self, t, y, args):
        if not (isinstance(y, tuple) and len(y) == 2):
            raise TypeError(
                "GraphCON's state is a tuple `(X, Y)` of node features and their "
                "rates; pass e.g. `(x0, jnp.zeros_like(x0))`."
            )
        x, v = y
        shape = self.state_shape()
        check_shape("GraphCON (X)", x, shape)
        check_shape("GraphCON (Y)", v, shape)
        k = self.layer(t)
        force = self.activation(self.graph.gcn(x @ self.weight[k]) + self.bias[k])
        return v, force - self.gamma * x - self.alpha * v
