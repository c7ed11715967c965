"""Attention as plain functions, shared by the layers (`neuralde.nn`) and the
attention field (`neuralde.fields.Attention`). It imports nothing from the package,
so both may import it: in `fields/` it would be imported upwards by the layers'
masks, in `nn/` downwards by a field.
"""

import math

import jax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Bool, Float


def dot_product_attention(
    query: Float[Array, "q_seq qk_size"],
    key_: Float[Array, "kv_seq qk_size"],
    value: Float[Array, "kv_seq v_size"],
    mask: Bool[ArrayLike, "q_seq kv_seq"] | None = None,
    *,
    causal: bool = False,
) -> Float[Array, "q_seq v_size"]:
    """Scaled dot-product attention (Vaswani et al. 2017),

    $\\operatorname{softmax}\\big(Q K^\\top / \\sqrt{d_k} + M\\big)\\, V$,

    where $M_{ij} = 0$ where query $i$ may attend to key $j$, and $-\\infty$ where it
    may not. (`jax.nn.dot_product_attention` needs values of the queries' size;
    this takes any.) The softmax is taken in at least float32, and a masked logit is
    the dtype's most negative number rather than $-\\infty$, so a query that may
    attend to nothing gets uniform weights instead of NaN.

    **Arguments:**

    - `query`: $Q$, one row per query position.
    - `key_`: $K$, one row per key position, with as many features as `query`.
    - `value`: $V$, one row per key position.
    - `mask`: optional boolean array of shape `(q_seq, kv_seq)`; `True` where query
        `i` may attend to key `j`.
    - `causal`: if `True`, query `i` may also attend only to keys `j <= i`
        (combined with `mask` by logical and). (Keyword only.)

    **Returns:** the attended values, one row per query.

    ??? cite "Reference"
        ```bibtex
        @inproceedings{vaswani2017attention,
            title={Attention is All You Need},
            author={Vaswani, Ashish and Shazeer, Noam and Parmar, Niki and
                    Uszkoreit, Jakob and Jones, Llion and Gomez, Aidan N and
                    Kaiser, {\\L}ukasz and Polosukhin, Illia},
            booktitle={Advances in Neural Information Processing Systems},
            volume={30}, year={2017}
        }
        ```
    """
    name = "dot_product_attention"
    for arg, x in (("query", query), ("key_", key_), ("value", value)):
        if jnp.ndim(x) != 2:
            raise ValueError(
                f"{name}: `{arg}` must have shape (seq_len, features), got shape "
                f"{jnp.shape(x)}. It acts on one sequence: batch with `jax.vmap`."
            )
    if query.shape[1] != key_.shape[1]:
        raise ValueError(
            f"{name}: `query` and `key_` must have the same number of features, got "
            f"{query.shape[1]} and {key_.shape[1]}."
        )
    if key_.shape[0] != value.shape[0]:
        raise ValueError(
            f"{name}: `key_` and `value` must have the same length (one value per "
            f"key), got {key_.shape[0]} and {value.shape[0]}."
        )
    mask = attention_mask(name, mask, query.shape[0], key_.shape[0], causal=causal)
    # In float32 at least, and masked logits a large finite negative: a query that
    # may attend to nothing then gets uniform weights rather than NaN.
    dtype = jnp.promote_types(query.dtype, jnp.float32)
    logits = (query @ key_.T).astype(dtype) / math.sqrt(query.shape[-1])
    if mask is not None:
        logits = jnp.where(mask, logits, jnp.finfo(dtype).min)
    weights = jax.nn.softmax(logits, axis=-1).astype(value.dtype)
    return weights @ value


def attention_mask(
    name: str,
    mask: Bool[ArrayLike, "*heads q_seq kv_seq"] | None,
    q_len: int,
    kv_len: int,
    *,
    causal: bool,
    num_heads: int | None = None,
) -> Bool[Array, "*heads q_seq kv_seq"] | None:
    """The checked boolean mask, with the causal mask folded in (`None` if there is
    neither).

    `mask` must have shape `(q_len, kv_len)`, or `(num_heads, q_len, kv_len)` when
    `num_heads` is given (one mask per head).
    """
    if mask is not None:
        mask = jnp.asarray(mask)
        shapes = [(q_len, kv_len)]
        if num_heads is not None:
            shapes.append((num_heads, q_len, kv_len))
        if mask.shape not in shapes:
            expected = " or ".join(str(s) for s in shapes)
            raise ValueError(
                f"{name}: `mask` must have shape {expected} (queries x keys), got "
                f"shape {mask.shape}. It masks one sequence: batch with `jax.vmap`."
            )
        if mask.dtype != jnp.bool_:
            raise TypeError(
                f"{name}: `mask` must be boolean (`True` where a query may attend to a "
                f"key), got dtype {mask.dtype}. Use e.g. `mask.astype(bool)`."
            )
    if causal:
        lower = jnp.tril(jnp.ones((q_len, kv_len), jnp.bool_))
        mask = lower if mask is None else mask & lower
    return mask
