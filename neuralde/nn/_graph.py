import math
from collections.abc import Callable
from typing import Literal

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
from jaxtyping import Array, Float, PRNGKeyArray

from ..operators import Graph, segment_softmax


def _check_features(name: str, x: Array, graph: Graph, in_features: int) -> None:
    if not isinstance(graph, Graph):
        raise TypeError(
            f"{name} takes `(x, graph)` with `graph` a `neuralde.operators.Graph`, got "
            f"{type(graph).__name__}."
        )
    if x.shape != (graph.num_nodes, in_features):
        raise ValueError(
            f"{name} expects node features of shape (num_nodes, in_features) = "
            f"({graph.num_nodes}, {in_features}), got {x.shape}."
        )


class GCN(eqx.Module):
    """Graph convolution (Kipf & Welling 2017), $\\sigma(\\hat A X W + b)$ with
    $\\hat A = \\tilde D^{-1/2}(A + I)\\tilde D^{-1/2}$, computed on the edge list
    (cost linear in the number of edges).

    ??? cite "Reference"
        ```bibtex
        @inproceedings{kipf2017semi,
            title={Semi-Supervised Classification with Graph Convolutional Networks},
            author={Kipf, Thomas N. and Welling, Max},
            booktitle={International Conference on Learning Representations},
            year={2017}
        }
        ```
    """

    linear: eqx.nn.Linear
    activation: Callable[[Array], Array] = eqx.field(static=True)
    in_features: int = eqx.field(static=True)

    def __init__(
        self,
        in_features: int,
        out_features: int,
        *,
        activation: Callable[[Array], Array] = jax.nn.relu,
        use_bias: bool = True,
        dtype=None,
        key: PRNGKeyArray,
    ):
        """**Arguments:**

        - `in_features`, `out_features`: feature sizes per node.
        - `activation`: $\\sigma$; pass `lambda x: x` for the linear propagation.
        - `use_bias`: whether to add $b$.
        - `dtype`: parameter dtype. `key`: PRNG key. (Keyword only.)
        """
        self.linear = eqx.nn.Linear(
            in_features, out_features, use_bias=use_bias, dtype=dtype, key=key
        )
        self.activation = activation
        self.in_features = in_features

    def __call__(
        self,
        x: Float[Array, "nodes in_features"],
        graph: Graph,
        *,
        key: PRNGKeyArray | None = None,
    ) -> Float[Array, "nodes out_features"]:
        """Node features `x` on `graph` -> new node features. `key` is ignored,
        accepted as by every layer."""
        del key
        _check_features("GCN", x, graph, self.in_features)
        h = graph.gcn(x @ self.linear.weight.T)
        if self.linear.bias is not None:
            h = h + self.linear.bias
        return self.activation(h)


class MessagePassing(eqx.Module):
    """A general message-passing layer,
    $h_u \\leftarrow \\phi\\big(h_u, \\bigoplus_{v \\to u} \\psi(h_u, h_v)\\big)$
    (Gilmer et al. 2017), with MLPs $\\psi$ (message) and $\\phi$ (update) and the
    aggregation $\\bigoplus$ a sum, mean or max over in-neighbours.
    """

    message: eqx.nn.MLP
    update: eqx.nn.MLP
    aggregation: Literal["sum", "mean", "max"] = eqx.field(static=True)
    in_features: int = eqx.field(static=True)

    def __init__(
        self,
        in_features: int,
        out_features: int,
        *,
        message_size: int | None = None,
        width_size: int = 64,
        depth: int = 1,
        aggregation: Literal["sum", "mean", "max"] = "sum",
        activation: Callable[[Array], Array] = jax.nn.relu,
        dtype=None,
        key: PRNGKeyArray,
    ):
        """**Arguments:**

        - `in_features`, `out_features`: feature sizes per node.
        - `message_size`: size of the messages $\\psi(h_u, h_v)$ (default
            `out_features`).
        - `width_size`, `depth`, `activation`: of the two MLPs.
        - `aggregation`: `"sum"`, `"mean"` or `"max"` over in-neighbours; nodes
            without in-neighbours aggregate to zero.
        - `dtype`: parameter dtype. `key`: PRNG key. (Keyword only.)
        """
        if aggregation not in ("sum", "mean", "max"):
            raise ValueError(
                f"`aggregation` must be 'sum', 'mean' or 'max', got {aggregation!r}."
            )
        message_size = out_features if message_size is None else message_size
        mkey, ukey = jr.split(key)
        mlp = dict(width_size=width_size, depth=depth, activation=activation)
        self.message = eqx.nn.MLP(
            2 * in_features, message_size, **mlp, dtype=dtype, key=mkey
        )
        self.update = eqx.nn.MLP(
            in_features + message_size, out_features, **mlp, dtype=dtype, key=ukey
        )
        self.aggregation = aggregation
        self.in_features = in_features

    def __call__(
        self,
        x: Float[Array, "nodes in_features"],
        graph: Graph,
        *,
        key: PRNGKeyArray | None = None,
    ) -> Float[Array, "nodes out_features"]:
        """Node features `x` on `graph` -> new node features. `key` is ignored,
        accepted as by every layer."""
        del key
        _check_features("MessagePassing", x, graph, self.in_features)
        pairs = jnp.concatenate([x[graph.receivers], x[graph.senders]], axis=-1)
        messages = jax.vmap(self.message)(pairs)
        if self.aggregation == "max":
            m = jax.ops.segment_max(messages, graph.receivers, graph.num_nodes)
            m = jnp.where(jnp.isfinite(m), m, 0)
        else:
            m = graph.aggregate(messages)
            if self.aggregation == "mean":
                count = graph.aggregate(jnp.ones(graph.num_edges, m.dtype))
                m = m / jnp.maximum(count, 1)[:, None]
        return jax.vmap(self.update)(jnp.concatenate([x, m], axis=-1))


class GAT(eqx.Module):
    """Graph attention (Veličković et al. 2018): every node attends over its
    in-neighbours and itself,

    $h_u' = \\big\\Vert_{k} \\sum_{v \\in N(u) \\cup \\{u\\}} \\alpha^k_{uv} W^k h_v$,
    $\\alpha^k_{uv} = \\operatorname{softmax}_v\\,\\mathrm{LeakyReLU}
    (a^{k\\top} [W^k h_u \\Vert W^k h_v])$,

    with the softmax over the edges into $u$ (a segment softmax). Heads are
    concatenated, or averaged with `concat=False`.

    ??? cite "Reference"
        ```bibtex
        @inproceedings{velickovic2018graph,
            title={Graph Attention Networks},
            author={Veli{\\v{c}}kovi{\\'c}, Petar and Cucurull, Guillem and
                    Casanova, Arantxa and Romero, Adriana and Li{\\`o}, Pietro and
                    Bengio, Yoshua},
            booktitle={International Conference on Learning Representations},
            year={2018}
        }
        ```
    """

    weight: Float[Array, "heads out_features in_features"]
    attention: Float[Array, "heads two_out_features"]
    bias: Float[Array, " out"]
    concat: bool = eqx.field(static=True)
    negative_slope: float = eqx.field(static=True)

    def __init__(
        self,
        in_features: int,
        out_features: int,
        *,
        num_heads: int = 1,
        concat: bool = True,
        negative_slope: float = 0.2,
        dtype=None,
        key: PRNGKeyArray,
    ):
        """**Arguments:**

        - `in_features`: feature size per node.
        - `out_features`: size of each head's output; the layer returns
            `num_heads * out_features` features with `concat=True`, else
            `out_features`.
        - `num_heads`: number of attention heads.
        - `concat`: concatenate the heads (default) or average them.
        - `negative_slope`: of the LeakyReLU in the attention logits.
        - `dtype`: parameter dtype. `key`: PRNG key. (Keyword only.)
        """
        dtype = jnp.result_type(float) if dtype is None else dtype
        wkey, akey = jr.split(key)
        # Glorot-uniform, as in the reference implementation.
        lim = math.sqrt(6 / (in_features + out_features))
        self.weight = jr.uniform(
            wkey, (num_heads, out_features, in_features), dtype, -lim, lim
        )
        lim = math.sqrt(6 / (2 * out_features + 1))
        self.attention = jr.uniform(
            akey, (num_heads, 2 * out_features), dtype, -lim, lim
        )
        self.bias = jnp.zeros(
            num_heads * out_features if concat else out_features, dtype
        )
        self.concat = concat
        self.negative_slope = negative_slope

    def __call__(
        self,
        x: Float[Array, "nodes in_features"],
        graph: Graph,
        *,
        key: PRNGKeyArray | None = None,
    ) -> Array:
        """Node features `x` on `graph` -> new node features (heads concatenated or
        averaged). `key` is ignored, accepted as by every layer."""
        del key
        _check_features("GAT", x, graph, self.weight.shape[-1])
        heads, out = self.weight.shape[:2]
        nodes = jnp.arange(graph.num_nodes, dtype=graph.senders.dtype)
        senders = jnp.concatenate([graph.senders, nodes])
        receivers = jnp.concatenate([graph.receivers, nodes])
        z = jnp.einsum("hoi,ni->nho", self.weight, x)
        a_dst, a_src = self.attention[:, :out], self.attention[:, out:]
        logits = jax.nn.leaky_relu(
            jnp.einsum("nho,ho->nh", z, a_dst)[receivers]
            + jnp.einsum("nho,ho->nh", z, a_src)[senders],
            self.negative_slope,
        )
        alpha = segment_softmax(logits, receivers, graph.num_nodes)
        h = jax.ops.segment_sum(
            alpha[..., None] * z[senders], receivers, graph.num_nodes
        )
        h = h.reshape(graph.num_nodes, heads * out) if self.concat else h.mean(1)
        return h + self.bias
