import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float, PRNGKeyArray

from .._attention import attention_mask
from .._checks import positive_int


def check_heads(name: str, model_size: int, num_heads: int) -> tuple[int, int]:
    """`(model_size, num_heads)` as ints, if the heads split the model evenly."""
    model_size = positive_int(model_size, "in_size")
    num_heads = positive_int(num_heads, "num_heads")
    if model_size % num_heads:
        raise ValueError(
            f"{name}: `num_heads={num_heads}` must divide the model size "
            f"`in_size={model_size}` (each head gets in_size / num_heads features). "
            "Choose a number of heads that divides it."
        )
    return model_size, num_heads


def check_sequence(name: str, arg: str, x: Array, features: int) -> None:
    """Trace-time check that `x` is one sequence of `features`-sized vectors."""
    shape = jnp.shape(x)
    if len(shape) != 2 or shape[1] != features:
        hint = ""
        if len(shape) == 3 and shape[2] == features:
            hint = " Layers act on one sequence: batch with `jax.vmap`."
        raise ValueError(
            f"{name}: `{arg}` must have shape (seq_len, {features}), got shape "
            f"{shape}.{hint}"
        )


class SelfAttention(eqx.Module):
    """Multi-head self-attention over one sequence (Vaswani et al. 2017),

    $\\operatorname{MHA}(X) = \\sum_h \\operatorname{softmax}\\big(
    X W^Q_h (X W^K_h)^\\top / \\sqrt{d_k} + M\\big)\\, X W^V_h\\, W^O_h$,

    with $d_k = d_\\text{model} / \\text{heads}$. A thin wrapper around
    `equinox.nn.MultiheadAttention` (the weights are its `query_proj`, `key_proj`,
    `value_proj` and `output_proj`) that checks the shapes and adds the causal mask.
    No dropout.
    """

    attention: eqx.nn.MultiheadAttention
    in_size: int = eqx.field(static=True)
    num_heads: int = eqx.field(static=True)
    causal: bool = eqx.field(static=True)

    def __init__(
        self,
        in_size: int,
        num_heads: int,
        *,
        causal: bool = False,
        use_bias: bool = False,
        dtype=None,
        key: PRNGKeyArray,
    ):
        """**Arguments:**

        - `in_size`: number of features of each position, in and out.
        - `num_heads`: number of heads; it must divide `in_size`.
        - `causal`: if `True`, position `i` attends only to positions `j <= i`.
        - `use_bias`: add biases to the four projections. Default `False`, as in
            `equinox.nn.MultiheadAttention`.
        - `dtype`: floating dtype of the parameters.
        - `key`: PRNG key for initialisation. (Keyword only.)
        """
        name = type(self).__name__
        self.in_size, self.num_heads = check_heads(name, in_size, num_heads)
        self.causal = bool(causal)
        self.attention = eqx.nn.MultiheadAttention(
            num_heads,
            in_size,
            use_query_bias=use_bias,
            use_key_bias=use_bias,
            use_value_bias=use_bias,
            use_output_bias=use_bias,
            dtype=dtype,
            key=key,
        )

    def __call__(
        self,
        x: Float[Array, "seq in_size"],
        mask: Bool[Array, "seq seq"] | Bool[Array, "heads seq seq"] | None = None,
        *,
        key: PRNGKeyArray | None = None,
    ) -> Float[Array, "seq in_size"]:
        """**Arguments:**

        - `x`: one sequence, shape `(seq_len, in_size)` (batch with `jax.vmap`).
        - `mask`: optional boolean mask of shape `(seq_len, seq_len)`, or
            `(num_heads, seq_len, seq_len)` for one mask per head; `True` where
            position `i` may attend to position `j`. Combined with the causal mask.
        - `key`: ignored; accepted so that the layer fits `eqx.nn.Sequential`.

        **Returns:** shape `(seq_len, in_size)`.
        """
        del key
        name = type(self).__name__
        check_sequence(name, "x", x, self.in_size)
        n = x.shape[0]
        mask = attention_mask(
            name, mask, n, n, causal=self.causal, num_heads=self.num_heads
        )
        return self.attention(x, x, x, mask)


class CrossAttention(eqx.Module):
    """Multi-head cross-attention: queries from one sequence, keys and values from
    another (the context, e.g. an encoder's output),

    $\\operatorname{MHA}(X, C) = \\sum_h \\operatorname{softmax}\\big(
    X W^Q_h (C W^K_h)^\\top / \\sqrt{d_k} + M\\big)\\, C W^V_h\\, W^O_h$.

    A thin wrapper around `equinox.nn.MultiheadAttention` that checks the shapes. No
    causal option: the two sequences need not be aligned; pass a `mask` instead.
    """

    attention: eqx.nn.MultiheadAttention
    in_size: int = eqx.field(static=True)
    context_size: int = eqx.field(static=True)
    num_heads: int = eqx.field(static=True)

    def __init__(
        self,
        in_size: int,
        num_heads: int,
        context_size: int | None = None,
        *,
        use_bias: bool = False,
        dtype=None,
        key: PRNGKeyArray,
    ):
        """**Arguments:**

        - `in_size`: number of features of each query position, in and out.
        - `num_heads`: number of heads; it must divide `in_size`.
        - `context_size`: number of features of each context position. Default
            `in_size`.
        - `use_bias`, `dtype`, `key`: as for
            [`neuralde.nn.SelfAttention`][].
        """
        name = type(self).__name__
        self.in_size, self.num_heads = check_heads(name, in_size, num_heads)
        context_size = in_size if context_size is None else context_size
        self.context_size = positive_int(context_size, "context_size")
        self.attention = eqx.nn.MultiheadAttention(
            num_heads,
            in_size,
            key_size=self.context_size,
            value_size=self.context_size,
            use_query_bias=use_bias,
            use_key_bias=use_bias,
            use_value_bias=use_bias,
            use_output_bias=use_bias,
            dtype=dtype,
            key=key,
        )

    def __call__(
        self,
        x: Float[Array, "q_seq in_size"],
        context: Float[Array, "kv_seq context_size"],
        mask: Bool[Array, "q_seq kv_seq"]
        | Bool[Array, "heads q_seq kv_seq"]
        | None = None,
        *,
        key: PRNGKeyArray | None = None,
    ) -> Float[Array, "q_seq in_size"]:
        """**Arguments:**

        - `x`: the queries' sequence, shape `(q_seq, in_size)`.
        - `context`: the sequence attended to, shape `(kv_seq, context_size)`.
        - `mask`: optional boolean mask of shape `(q_seq, kv_seq)`, or
            `(num_heads, q_seq, kv_seq)`; `True` where query `i` may attend to
            context position `j`.
        - `key`: ignored; accepted so that the layer fits `eqx.nn.Sequential`.

        **Returns:** shape `(q_seq, in_size)`.
        """
        del key
        name = type(self).__name__
        check_sequence(name, "x", x, self.in_size)
        check_sequence(name, "context", context, self.context_size)
        mask = attention_mask(
            name,
            mask,
            x.shape[0],
            context.shape[0],
            causal=False,
            num_heads=self.num_heads,
        )
        return self.attention(x, context, context, mask)
