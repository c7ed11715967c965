from collections.abc import Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float, Int, Shaped


class Graph(eqx.Module):
    """The connectivity of a graph, in jraph's data model: an edge list.

    Edge `e` carries a message from node `senders[e]` to node `receivers[e]`. An
    undirected graph stores each edge in both directions (the constructors below do
    this). Node features are separate arrays of shape `(num_nodes, features)`, passed
    to the layers and operators next to the graph. Every sum over neighbours is a
    `jax.ops.segment_sum` with the static `num_segments=num_nodes`, so the cost is
    linear in the number of edges and the shapes are fixed under `jit`.

    Operators on node features (all matrix-free):

    - `laplacian(x)`: $L x$ with $L = D - A$, and `laplacian(x, normalized=True)`:
        $(I - D^{-1/2} A D^{-1/2}) x$;
    - `gcn(x)`: $\\hat A x$ with $\\hat A = \\tilde D^{-1/2} (A + I) \\tilde D^{-1/2}$
        (Kipf & Welling 2017);
    - `mean(x)`: $D^{-1} A x$, the mean over in-neighbours;
    - `gradient(x)`: node to edge differences, and `divergence`, its transpose.

    Here $A_{uv}$ is the weight of the edge $v \\to u$ and $D$ the diagonal of
    weighted in-degrees, so that `laplacian` is $D - A$ for an undirected graph.
    """

    senders: Int[Array, " edges"]
    receivers: Int[Array, " edges"]
    weights: Float[Array, " edges"] | None
    num_nodes: int = eqx.field(static=True)

    def __init__(
        self,
        senders: Int[ArrayLike, " edges"],
        receivers: Int[ArrayLike, " edges"],
        num_nodes: int,
        weights: Float[ArrayLike, " edges"] | None = None,
    ):
        """**Arguments:**

        - `senders`, `receivers`: integer arrays of equal length, the edge list.
        - `num_nodes`: the number of nodes, static (it fixes the shapes).
        - `weights`: optional edge weights; `None` means every edge has weight 1.

        Raises `ValueError` for edge indices that are not integers, negative or not
        below `num_nodes` (checked when the indices are concrete).
        """
        if isinstance(num_nodes, bool) or not isinstance(num_nodes, int | np.integer):
            raise TypeError(f"`num_nodes` must be an int, got {num_nodes!r}.")
        if num_nodes < 1:
            raise ValueError(f"`num_nodes` must be positive, got {num_nodes}.")
        self.num_nodes = int(num_nodes)
        self.senders = _edge_index(senders, "senders", self.num_nodes)
        self.receivers = _edge_index(receivers, "receivers", self.num_nodes)
        if self.senders.shape != self.receivers.shape:
            raise ValueError(
                "`senders` and `receivers` must have the same length, got "
                f"{self.senders.shape[0]} and {self.receivers.shape[0]}."
            )
        if weights is not None:
            weights = jnp.asarray(weights)
            if weights.shape != self.senders.shape:
                raise ValueError(
                    f"`weights` must have one entry per edge, shape "
                    f"{self.senders.shape}, got {weights.shape}."
                )
            if not jnp.issubdtype(weights.dtype, jnp.floating):
                weights = weights.astype(jnp.result_type(float))
        self.weights = weights

    @classmethod
    def from_dense(cls, adjacency: Shaped[ArrayLike, "nodes nodes"]) -> "Graph":
        """The graph of a dense adjacency matrix: an edge $v \\to u$ for every
        non-zero $A_{uv}$, weighted by it. Must be concrete (not traced).

        A 0/1 matrix gives an unweighted graph (`weights=None`).
        """
        a = np.asarray(adjacency)
        if a.ndim != 2 or a.shape[0] != a.shape[1]:
            raise ValueError(
                f"`adjacency` must be a square matrix, got shape {a.shape}."
            )
        receivers, senders = np.nonzero(a)
        values = a[receivers, senders]
        weights = None if np.all(values == 1) else values.astype(float)
        return cls(senders, receivers, a.shape[0], weights)

    @classmethod
    def from_networkx(cls, graph, *, weight: str | None = None) -> "Graph":
        """The graph of a `networkx` graph, with nodes numbered in the order of
        `graph.nodes`. An undirected graph gets both directions of every edge.

        - `weight`: the name of an edge attribute to use as weights (missing values
            count as 1), or `None` for an unweighted graph.
        """
        index = {node: i for i, node in enumerate(graph.nodes)}
        senders, receivers, weights = [], [], []
        for u, v, data in graph.edges(data=True):
            w = 1.0 if weight is None else float(data.get(weight, 1.0))
            pairs = [(u, v)] if graph.is_directed() or u == v else [(u, v), (v, u)]
            for s, r in pairs:
                senders.append(index[s])
                receivers.append(index[r])
                weights.append(w)
        weights = None if weight is None else np.asarray(weights)
        return cls(
            np.asarray(senders, np.int32),
            np.asarray(receivers, np.int32),
            len(index),
            weights,
        )

    @classmethod
    def torus(cls, side: int) -> "Graph":
        """The periodic `side x side` grid graph: node `i * side + j` has the four
        neighbours of `(i, j)` modulo `side`, each edge in both directions."""
        if isinstance(side, bool) or not isinstance(side, int) or side < 1:
            raise ValueError(f"`side` must be a positive int, got {side!r}.")
        i, j = np.divmod(np.arange(side * side), side)
        senders, receivers = [], []
        for di, dj in ((0, 1), (1, 0), (0, -1), (-1, 0)):
            senders.append(((i + di) % side) * side + (j + dj) % side)
            receivers.append(i * side + j)
        return cls(np.concatenate(senders), np.concatenate(receivers), side * side)

    @property
    def num_edges(self) -> int:
        return self.senders.shape[0]

    def edge_weights(self, dtype=None) -> Float[Array, " edges"]:
        """The edge weights, ones for an unweighted graph."""
        if self.weights is None:
            return jnp.ones(self.senders.shape, dtype or jnp.result_type(float))
        return self.weights if dtype is None else self.weights.astype(dtype)

    def aggregate(
        self, messages: Shaped[Array, "edges ..."]
    ) -> Shaped[Array, "nodes ..."]:
        """Sum the per-edge `messages` at their receivers."""
        return jax.ops.segment_sum(messages, self.receivers, self.num_nodes)

    def degree(self, dtype=None) -> Float[Array, " nodes"]:
        """The weighted in-degree of every node (the degree, for undirected graphs)."""
        return self.aggregate(self.edge_weights(dtype))

    def to_dense(self, dtype=None) -> Float[Array, "nodes nodes"]:
        """The dense adjacency matrix, $A_{uv}$ = weight of the edge $v \\to u$
        (parallel edges add up). For tests and small graphs."""
        a = jnp.zeros((self.num_nodes, self.num_nodes), dtype or jnp.result_type(float))
        return a.at[self.receivers, self.senders].add(self.edge_weights(a.dtype))

    def propagate(self, x: Float[Array, "nodes ..."], coefficients=None) -> Array:
        """$\\sum_{v \\to u} c_{vu} x_v$ at every node $u$, with $c$ the edge weights
        times `coefficients` (per edge) if given."""
        c = self.edge_weights(x.dtype)
        if coefficients is not None:
            c = c * coefficients
        return self.aggregate(_scale(c, x[self.senders]))

    def laplacian(self, x: Float[Array, "nodes ..."], *, normalized: bool = False):
        """$L x$ with $L = D - A$, or with $L = I - D^{-1/2} A D^{-1/2}$ if
        `normalized` (isolated nodes get $L x = x$ there)."""
        self._check_nodes(x, "laplacian")
        d = self.degree(x.dtype)
        if not normalized:
            return _scale(d, x) - self.propagate(x)
        r = jnp.where(d > 0, jax.lax.rsqrt(jnp.where(d > 0, d, 1)), 0)
        return x - _scale(r, self.propagate(_scale(r, x)))

    def mean(self, x: Float[Array, "nodes ..."]) -> Float[Array, "nodes ..."]:
        """$D^{-1} A x$: the (weighted) mean of the in-neighbours' features; zero at
        nodes without in-neighbours."""
        self._check_nodes(x, "mean")
        d = self.degree(x.dtype)
        return _scale(1 / jnp.where(d > 0, d, 1), self.propagate(x))

    def gcn(self, x: Float[Array, "nodes ..."]) -> Float[Array, "nodes ..."]:
        """$\\hat A x$, $\\hat A = \\tilde D^{-1/2}(A + I)\\tilde D^{-1/2}$ with
        $\\tilde D = D + I$: the propagation of Kipf & Welling (2017)."""
        self._check_nodes(x, "gcn")
        r = jax.lax.rsqrt(self.degree(x.dtype) + 1)
        return _scale(r, self.propagate(_scale(r, x)) + _scale(r, x))

    def gradient(self, x: Float[Array, "nodes ..."]) -> Float[Array, "edges ..."]:
        """$(G x)_e = \\sqrt{w_e}\\,(x_{r_e} - x_{s_e})$: the difference along each
        edge. For an undirected graph (both directions stored),
        $G^\\top G = 2L$."""
        self._check_nodes(x, "gradient")
        sqrt_w = jnp.sqrt(self.edge_weights(x.dtype))
        return _scale(sqrt_w, x[self.receivers] - x[self.senders])

    def divergence(self, e: Float[Array, "edges ..."]) -> Float[Array, "nodes ..."]:
        """$G^\\top e$, the exact transpose of `gradient`."""
        if e.shape[:1] != (self.num_edges,):
            raise ValueError(
                f"divergence expects edge values of shape ({self.num_edges}, ...), "
                f"one row per edge; got shape {e.shape}."
            )
        e = _scale(jnp.sqrt(self.edge_weights(e.dtype)), e)
        minus = jax.ops.segment_sum(e, self.senders, self.num_nodes)
        return self.aggregate(e) - minus

    def pad(self, num_nodes: int, num_edges: int) -> tuple["Graph", Array]:
        """The graph padded to fixed sizes, so that graphs of different sizes share
        one compiled function (jraph's `pad_with_graphs`).

        The padding nodes come after the real ones and have no edges to them; the
        padding edges are self-loops on the last padding node. Pad node features with
        zeros to `num_nodes` rows.

        **Returns:** `(graph, node_mask)`, with `node_mask` true on real nodes.
        """
        if num_nodes <= self.num_nodes or num_edges < self.num_edges:
            raise ValueError(
                f"pad needs num_nodes > {self.num_nodes} (one padding node at least) "
                f"and num_edges >= {self.num_edges}; got {num_nodes} and {num_edges}."
            )
        extra = num_edges - self.num_edges
        last = jnp.full((extra,), num_nodes - 1, self.senders.dtype)
        weights = self.weights
        if weights is not None:
            weights = jnp.concatenate([weights, jnp.zeros((extra,), weights.dtype)])
        graph = Graph(
            jnp.concatenate([self.senders, last]),
            jnp.concatenate([self.receivers, last]),
            num_nodes,
            weights,
        )
        return graph, jnp.arange(num_nodes) < self.num_nodes

    def _check_nodes(self, x, name):
        if x.shape[:1] != (self.num_nodes,):
            raise ValueError(
                f"{name} expects node features of shape ({self.num_nodes}, ...), one "
                f"row per node; got shape {x.shape}."
            )


def batch(graphs: Sequence[Graph]) -> tuple[Graph, Int[Array, " nodes"]]:
    """The disjoint union of `graphs`, as one graph (jraph's `batch`).

    Node $i$ of graph $g$ becomes node `offset[g] + i`; stack the node features with
    `jnp.concatenate`.

    **Returns:** `(graph, graph_index)`, where `graph_index[u]` is the graph that
    node `u` came from: the segment ids for per-graph pooling with
    `jax.ops.segment_sum(..., num_segments=len(graphs))`.
    """
    if len(graphs) == 0:
        raise ValueError("batch needs at least one graph.")
    offsets = np.cumsum([0] + [g.num_nodes for g in graphs])
    weighted = [g.weights is not None for g in graphs]
    weights = None
    if any(weighted):
        weights = jnp.concatenate([g.edge_weights() for g in graphs])
    graph = Graph(
        jnp.concatenate([g.senders + o for g, o in zip(graphs, offsets)]),
        jnp.concatenate([g.receivers + o for g, o in zip(graphs, offsets)]),
        int(offsets[-1]),
        weights,
    )
    graph_index = jnp.repeat(jnp.arange(len(graphs)), np.diff(offsets))
    return graph, graph_index


def segment_softmax(
    logits: Float[Array, "edges ..."], segment_ids: Int[Array, " edges"], num_segments
) -> Float[Array, "edges ..."]:
    """Softmax of `logits` over the entries that share a segment id (jraph's
    `segment_softmax`): over the edges into each node, for graph attention."""
    top = jax.ops.segment_max(logits, segment_ids, num_segments)
    # Empty segments have max -inf; they are never gathered, but keep them finite.
    top = jax.lax.stop_gradient(jnp.where(jnp.isfinite(top), top, 0))
    z = jnp.exp(logits - top[segment_ids])
    total = jax.ops.segment_sum(z, segment_ids, num_segments)
    return z / total[segment_ids]


def _scale(c: Array, x: Array) -> Array:
    """Multiply the rows of `x` by the entries of `c`."""
    return c.reshape(c.shape + (1,) * (x.ndim - 1)) * x


def _edge_index(index, name: str, num_nodes: int) -> Int[Array, " edges"]:
    try:
        a = np.asarray(index)
    except jax.errors.TracerArrayConversionError:
        # Traced indices: only the dtype can be checked.
        if not jnp.issubdtype(index.dtype, jnp.integer):
            raise ValueError(f"`{name}` must be integers, got dtype {index.dtype}.")
        return index
    if a.ndim != 1:
        raise ValueError(
            f"`{name}` must be a 1-D array of node indices, got {a.shape}."
        )
    if not np.issubdtype(a.dtype, np.integer):
        if a.size and not np.all(np.mod(a, 1) == 0):
            raise ValueError(
                f"`{name}` must be integer node indices, got non-integer values such "
                f"as {a[np.mod(a, 1) != 0][0]!r}."
            )
        raise ValueError(
            f"`{name}` must have an integer dtype, got {a.dtype}; convert it with "
            "`.astype(int)`."
        )
    if a.size and a.min() < 0:
        raise ValueError(f"`{name}` has a negative node index, {a.min()}.")
    if a.size and a.max() >= num_nodes:
        raise ValueError(
            f"`{name}` has node index {a.max()}, out of range for num_nodes="
            f"{num_nodes} (indices run from 0 to {num_nodes - 1})."
        )
    return jnp.asarray(a, jnp.int32)


def check_graph(name: str, graph) -> None:
    if not isinstance(graph, Graph):
        raise TypeError(
            f"{name} needs a `neuralde.operators.Graph`, got "
            f"{type(graph).__name__}; build one with `Graph.from_dense(adjacency)` or "
            "`Graph.from_networkx(g)`."
        )
