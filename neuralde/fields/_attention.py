import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
from jaxtyping import Array, Int, PRNGKeyArray

from .._attention import attention_mask
from .._checks import positive_int
from ._base import (
    _describe,
    AbstractField,
    Activation,
    check_activation,
    check_layers,
    check_shape,
)


class Attention(AbstractField):
    """A transformer as an ODE, on a sequence $X$ of shape `(seq_len, in_size)`:

    $\\dot X = \\operatorname{Attn}_k\\big(\\operatorname{LN}^a_k(X)\\big)
    + \\operatorname{FFN}_k\\big(\\operatorname{LN}^f_k(X)\\big)$
    for $t$ in layer $k$,

    with multi-head self-attention $\\operatorname{Attn}$, the position-wise
    $\\operatorname{FFN}(x) = W_2 \\sigma(W_1 x + b_1) + b_2$, and LayerNorms over
    the features of each position. Explicit Euler on it, one step per layer, is a
    pre-LN transformer whose attention and feed-forward branches run in parallel
    on the same input, $X_{j+1} = X_j + \\Delta t\\,(\\operatorname{Attn}_j +
    \\operatorname{FFN}_j)$ (Lu et al. 2019 read the transformer as this splitting).

    **Scaling.** The LayerNorms sit inside the field (pre-LN), so each sub-layer sees
    rows of norm at most $\\sqrt{d_\\text{model}}\\,\\max|\\gamma| + \\|\\beta\\|$
    whatever $X$ is. Attention takes convex combinations of the values, and a
    bounded $\\sigma$ (the default `tanh`) bounds the feed-forward branch, so
    $\\|F(t, X)\\| \\le C(\\theta)$ for all $X$: solutions exist for all time and
    move at most $C\\, t$ from their start. Without the LayerNorms the
    attention logits grow quadratically in $X$ and the flow can blow up in finite
    time.

    The field has no positional encoding: add one to the initial state
    (`neuralde.nn.sinusoidal_encoding`). Without it, and with `causal=False`, the
    field is equivariant under permutations of the positions.

    ??? cite "Reference"
        ```bibtex
        @article{lu2019understanding,
            title={Understanding and Improving Transformer From a Multi-Particle
                   Dynamic System Point of View},
            author={Lu, Yiping and Li, Zhuohan and He, Di and Sun, Zhiqing and
                    Dong, Bin and Qin, Tao and Wang, Liwei and Liu, Tie-Yan},
            journal={arXiv:1906.02762}, year={2019}
        }
        ```
    """

    attention: eqx.nn.MultiheadAttention
    ffn: eqx.nn.MLP
    norm_attention: eqx.nn.LayerNorm
    norm_ffn: eqx.nn.LayerNorm
    in_size: int = eqx.field(static=True)
    num_heads: int = eqx.field(static=True)
    seq_len: int | None = eqx.field(static=True)
    causal: bool = eqx.field(static=True)
    layers: int = eqx.field(static=True)
    t1: float = eqx.field(static=True)

    def __init__(
        self,
        in_size: int,
        num_heads: int,
        *,
        seq_len: int | None = None,
        width_size: int | None = None,
        causal: bool = False,
        layers: int = 1,
        t1: float = 1.0,
        activation: Activation = jnp.tanh,
        use_bias: bool = False,
        dtype=None,
        key: PRNGKeyArray,
    ):
        """**Arguments:**

        - `in_size`: number of features of each position.
        - `num_heads`: number of attention heads; it must divide `in_size`.
        - `seq_len`: if given, the state must have exactly this many positions;
            by default any length is accepted (the parameters do not depend on it).
        - `width_size`: hidden width of the feed-forward branch. Default `4 * in_size`.
        - `causal`: if `True`, position `i` attends only to positions `j <= i`, so
            the trajectory of position `i` does not depend on later positions.
        - `layers`, `t1`: as for [`neuralde.fields.MLP`][].
        - `activation`: $\\sigma$ of the feed-forward branch. Default `jnp.tanh`,
            which keeps the field bounded (see above).
        - `use_bias`: biases in the attention projections. (The feed-forward branch
            always has them.)
        - `dtype`: floating dtype of the parameters.
        - `key`: PRNG key for initialisation. (Keyword only.)

        Initialisation: each layer is drawn independently, with `equinox.nn`'s
        defaults (uniform in $\\pm 1/\\sqrt{\\text{fan-in}}$); LayerNorms start at
        $\\gamma = 1$, $\\beta = 0$.
        """
        check_activation("Attention", activation)
        check_layers(layers, t1)
        self.in_size = positive_int(in_size, "in_size")
        self.num_heads = positive_int(num_heads, "num_heads")
        if self.in_size % self.num_heads:
            raise ValueError(
                f"Attention: `num_heads={num_heads}` must divide the model size "
                f"`in_size={in_size}` (each head gets in_size / num_heads features). "
                "Choose a number of heads that divides it."
            )
        self.seq_len = None if seq_len is None else positive_int(seq_len, "seq_len")
        width_size = 4 * self.in_size if width_size is None else width_size
        width_size = positive_int(width_size, "width_size")

        def make(k):
            akey, fkey = jr.split(k)
            attention = eqx.nn.MultiheadAttention(
                self.num_heads,
                self.in_size,
                use_query_bias=use_bias,
                use_key_bias=use_bias,
                use_value_bias=use_bias,
                use_output_bias=use_bias,
                dtype=dtype,
                key=akey,
            )
            ffn = eqx.nn.MLP(
                self.in_size,
                self.in_size,
                width_size,
                depth=1,
                activation=activation,
                dtype=dtype,
                key=fkey,
            )
            norms = [eqx.nn.LayerNorm(self.in_size, dtype=dtype) for _ in range(2)]
            return attention, ffn, *norms

        stacked = eqx.filter_vmap(make)(jr.split(key, layers))
        self.attention, self.ffn, self.norm_attention, self.norm_ffn = stacked
        self.causal = bool(causal)
        self.layers = layers
        self.t1 = t1

    def at_layer(
        self, k: Int[Array, ""] | int
    ) -> tuple[
        eqx.nn.MultiheadAttention, eqx.nn.MLP, eqx.nn.LayerNorm, eqx.nn.LayerNorm
    ]:
        """The sub-layers of layer `k`: `(attention, ffn, norm_attention,
        norm_ffn)`."""
        parts = (self.attention, self.ffn, self.norm_attention, self.norm_ffn)
        return jax.tree.map(lambda x: x[k] if eqx.is_array(x) else x, parts)

    def state_shape(self) -> tuple[int, ...] | None:
        """`(seq_len, in_size)`, or `None` if `seq_len` was not fixed."""
        return None if self.seq_len is None else (self.seq_len, self.in_size)

    @classmethod
    def example(cls, in_size, *, width_size=None, layers=1, t1=1.0, dtype=None, key):
        """Sequences of 8 positions; two heads where `in_size` is even, else one."""
        heads = 2 if in_size % 2 == 0 else 1
        return cls(
            in_size,
            heads,
            seq_len=8,
            width_size=width_size,
            layers=layers,
            t1=t1,
            dtype=dtype,
            key=key,
        )

    def __call__(self, t, y, args):
        n = self.seq_len
        if n is None and isinstance(y, jax.Array | np.ndarray) and y.ndim == 2:
            n = y.shape[0]  # any length will do
        if n is None:
            raise ValueError(
                f"Attention expects a state of shape (seq_len, {self.in_size}), but "
                f"got {_describe(y)}."
            )
        check_shape("Attention", y, (n, self.in_size))
        attention, ffn, norm_attention, norm_ffn = self.at_layer(self.layer(t))
        n = y.shape[0]
        mask = attention_mask("Attention", None, n, n, causal=self.causal)
        a = jax.vmap(norm_attention)(y)
        f = jax.vmap(norm_ffn)(y)
        return attention(a, a, a, mask) + jax.vmap(ffn)(f)
