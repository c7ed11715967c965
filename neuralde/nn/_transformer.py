from collections.abc import Callable
from typing import Literal

import equinox as eqx
import jax
import jax.random as jr
from jaxtyping import Array, Bool, Float, PRNGKeyArray

from .._checks import positive_int
from ._attention import check_sequence, SelfAttention


Norm = Literal["post", "pre"]


class TransformerBlock(eqx.Module):
    """One transformer encoder block: self-attention then a position-wise
    feed-forward network, each with a residual connection and a LayerNorm.

    - `norm="post"` (default; Vaswani et al. 2017):
        $H = \\operatorname{LN}_1(X + \\operatorname{Attn}(X))$,
        $Y = \\operatorname{LN}_2(H + \\operatorname{FFN}(H))$.
    - `norm="pre"` (Xiong et al. 2020; GPT-2):
        $H = X + \\operatorname{Attn}(\\operatorname{LN}_1(X))$,
        $Y = H + \\operatorname{FFN}(\\operatorname{LN}_2(H))$. Its residual stream is
        never normalised, so gradients pass through deep stacks undamped; a stack of
        pre-LN blocks wants a final LayerNorm.

    $\\operatorname{FFN}(x) = W_2\\, \\sigma(W_1 x + b_1) + b_2$ acts on each position
    separately, as do the LayerNorms (over the `in_size` features of a position).

    ??? cite "Reference"
        ```bibtex
        @inproceedings{xiong2020layer,
            title={On Layer Normalization in the Transformer Architecture},
            author={Xiong, Ruibin and Yang, Yunchang and He, Di and Zheng, Kai and
                    Zheng, Shuxin and Xing, Chen and Zhang, Huishuai and Lan, Yanyan
                    and Wang, Liwei and Liu, Tieyan},
            booktitle={International Conference on Machine Learning},
            year={2020}
        }
        ```
    """

    attention: SelfAttention
    ffn: eqx.nn.MLP
    norm1: eqx.nn.LayerNorm
    norm2: eqx.nn.LayerNorm
    norm: Norm = eqx.field(static=True)

    def __init__(
        self,
        in_size: int,
        num_heads: int,
        *,
        width_size: int | None = None,
        causal: bool = False,
        norm: Norm = "post",
        activation: Callable[[Array], Array] = jax.nn.gelu,
        use_bias: bool = False,
        dtype=None,
        key: PRNGKeyArray,
    ):
        """**Arguments:**

        - `in_size`: number of features of each position.
        - `num_heads`: number of attention heads; it must divide `in_size`.
        - `width_size`: hidden width of the feed-forward network. Default
            `4 * in_size`, as in Vaswani et al.
        - `causal`: if `True`, position `i` attends only to positions `j <= i` (a
            decoder block).
        - `norm`: `"post"` (default) or `"pre"`: where the LayerNorms sit.
        - `activation`: $\\sigma$ of the feed-forward network. Default
            `jax.nn.gelu`.
        - `use_bias`: biases in the attention projections. (The feed-forward network
            always has them.)
        - `dtype`: floating dtype of the parameters.
        - `key`: PRNG key for initialisation. (Keyword only.)
        """
        if norm not in ("post", "pre"):
            raise ValueError(
                f"TransformerBlock: `norm` must be 'post' or 'pre', got {norm!r}."
            )
        width_size = 4 * in_size if width_size is None else width_size
        width_size = positive_int(width_size, "width_size")
        akey, fkey = jr.split(key)
        self.attention = SelfAttention(
            in_size,
            num_heads,
            causal=causal,
            use_bias=use_bias,
            dtype=dtype,
            key=akey,
        )
        in_size = self.attention.in_size
        self.ffn = eqx.nn.MLP(
            in_size,
            in_size,
            width_size,
            depth=1,
            activation=activation,
            dtype=dtype,
            key=fkey,
        )
        self.norm1 = eqx.nn.LayerNorm(in_size, dtype=dtype)
        self.norm2 = eqx.nn.LayerNorm(in_size, dtype=dtype)
        self.norm = norm

    def __call__(
        self,
        x: Float[Array, "seq in_size"],
        mask: Bool[Array, "seq seq"] | Bool[Array, "heads seq seq"] | None = None,
        *,
        key: PRNGKeyArray | None = None,
    ) -> Float[Array, "seq in_size"]:
        """**Arguments:**

        - `x`: one sequence, shape `(seq_len, in_size)` (batch with `jax.vmap`).
        - `mask`: optional attention mask, as for
            [`neuralde.nn.SelfAttention`][].
        - `key`: ignored; accepted so that the layer fits `eqx.nn.Sequential`.

        **Returns:** shape `(seq_len, in_size)`.
        """
        del key
        check_sequence("TransformerBlock", "x", x, self.attention.in_size)
        ln1 = jax.vmap(self.norm1)
        ln2 = jax.vmap(self.norm2)
        ffn = jax.vmap(self.ffn)
        if self.norm == "post":
            h = ln1(x + self.attention(x, mask))
            return ln2(h + ffn(h))
        h = x + self.attention(ln1(x), mask)
        return h + ffn(ln2(h))
