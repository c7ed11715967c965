from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
from jaxtyping import Array, Float, Int, PRNGKeyArray

from .._checks import positive_int
from ._positional import sinusoidal_encoding
from ._transformer import Norm, TransformerBlock


class GPT(eqx.Module):
    """A small decoder-only transformer language model (Radford et al. 2019):

    token embedding + sinusoidal positions, `depth` causal
    [`neuralde.nn.TransformerBlock`][]s, a final LayerNorm, and a linear head that
    returns the logits of the next token at every position.

    The blocks' parameters are stacked on a leading axis and applied with one
    `jax.lax.scan`, so the model compiles in a time that does not grow with its
    depth. Pair it with `neuralde.losses.next_token` for training and
    [`neuralde.nn.generate`][] for sampling.

    ??? cite "Reference"
        ```bibtex
        @techreport{radford2019language,
            title={Language Models are Unsupervised Multitask Learners},
            author={Radford, Alec and Wu, Jeffrey and Child, Rewon and Luan, David and
                    Amodei, Dario and Sutskever, Ilya},
            institution={OpenAI}, year={2019}
        }
        ```
    """

    embedding: eqx.nn.Embedding
    blocks: TransformerBlock
    norm: eqx.nn.LayerNorm
    head: eqx.nn.Linear
    depth: int = eqx.field(static=True)
    max_len: int = eqx.field(static=True)

    def __init__(
        self,
        vocab_size: int,
        embedding_size: int,
        num_heads: int,
        depth: int,
        *,
        max_len: int,
        width_size: int | None = None,
        norm: Norm = "pre",
        activation: Callable[[Array], Array] = jax.nn.gelu,
        dtype=None,
        key: PRNGKeyArray,
    ):
        """**Arguments:**

        - `vocab_size`: number of distinct tokens; token ids lie in
            `[0, vocab_size)`.
        - `embedding_size`: number of features of each position.
        - `num_heads`: number of attention heads; it must divide `embedding_size`.
        - `depth`: number of transformer blocks.
        - `max_len`: the longest sequence the model accepts. (Keyword only.)
        - `width_size`, `activation`: as for [`neuralde.nn.TransformerBlock`][].
        - `norm`: `"pre"` (default, as in GPT-2: the residual stream is normalised
            only by the final LayerNorm) or `"post"`.
        - `dtype`: floating dtype of the parameters.
        - `key`: PRNG key for initialisation. (Keyword only.)

        The embedding table is standard normal (`equinox.nn.Embedding`), on the
        scale of the positional encoding's entries in $[-1, 1]$.
        """
        vocab_size = positive_int(vocab_size, "vocab_size")
        self.depth = positive_int(depth, "depth")
        self.max_len = positive_int(max_len, "max_len")
        ekey, bkey, hkey = jr.split(key, 3)
        self.embedding = eqx.nn.Embedding(
            vocab_size, embedding_size, dtype=dtype, key=ekey
        )

        def make_block(k):
            return TransformerBlock(
                embedding_size,
                num_heads,
                width_size=width_size,
                causal=True,
                norm=norm,
                activation=activation,
                dtype=dtype,
                key=k,
            )

        self.blocks = eqx.filter_vmap(make_block)(jr.split(bkey, self.depth))
        self.norm = eqx.nn.LayerNorm(embedding_size, dtype=dtype)
        self.head = eqx.nn.Linear(
            embedding_size, vocab_size, use_bias=False, dtype=dtype, key=hkey
        )

    def __call__(
        self, tokens: Int[Array, " seq"], *, key: PRNGKeyArray | None = None
    ) -> Float[Array, "seq vocab"]:
        """**Arguments:**

        - `tokens`: one sequence of integer token ids, shape `(seq_len,)` with
            `seq_len <= max_len` (batch with `jax.vmap`).
        - `key`: ignored; accepted so that the layer fits `eqx.nn.Sequential`.

        **Returns:** the logits, shape `(seq_len, vocab_size)`; row `i` scores the
        token at position `i + 1` and depends on `tokens[: i + 1]` only.
        """
        del key
        tokens = jnp.asarray(tokens)
        if tokens.ndim != 1:
            hint = " GPT acts on one sequence: batch with `jax.vmap`."
            raise ValueError(
                "GPT: `tokens` must have shape (seq_len,), got shape "
                f"{tokens.shape}.{hint if tokens.ndim == 2 else ''}"
            )
        if not jnp.issubdtype(tokens.dtype, jnp.integer):
            raise TypeError(
                f"GPT: `tokens` must be integer token ids, got dtype {tokens.dtype}."
            )
        n = tokens.shape[0]
        if not 1 <= n <= self.max_len:
            raise ValueError(
                f"GPT: the sequence has length {n}, but the model takes lengths 1 to "
                f"`max_len={self.max_len}`. Build it with a larger `max_len`."
            )
        vocab_size, embedding_size = self.embedding.weight.shape
        tokens = eqx.error_if(
            tokens,
            (tokens < 0) | (tokens >= vocab_size),
            f"GPT: token ids must lie in [0, vocab_size={vocab_size}).",
        )
        x = jax.vmap(self.embedding)(tokens)
        x = x + sinusoidal_encoding(n, embedding_size, dtype=x.dtype)
        params, static = eqx.partition(self.blocks, eqx.is_array)

        def block(x, p):
            return eqx.combine(p, static)(x), None

        x, _ = jax.lax.scan(block, x, params)
        return jax.vmap(lambda h: self.head(self.norm(h)))(x)


def generate(
    model: GPT,
    prompt: Int[Array, " prompt_len"],
    num_tokens: int,
    *,
    temperature: float = 1.0,
    key: PRNGKeyArray,
) -> Int[Array, " prompt_len+num_tokens"]:
    """Extend `prompt` by `num_tokens` tokens sampled from the model.

    The sequence lives in a buffer of fixed length `prompt_len + num_tokens`, filled
    one position per step of a `jax.lax.scan`, so under `jax.jit` it compiles once
    for each pair of lengths. Each step runs the model on the whole buffer: the model
    is causal, so the unfilled positions after the current one (zeros) do not affect
    its logits. (No key-value cache: the cost is quadratic in `num_tokens`, fine for
    small models.)

    **Arguments:**

    - `model`: a [`neuralde.nn.GPT`][].
    - `prompt`: the integer token ids to continue, shape `(prompt_len,)`,
        `prompt_len >= 1`.
    - `num_tokens`: how many tokens to add; `prompt_len + num_tokens` must not
        exceed `model.max_len`.
    - `temperature`: the logits are divided by it before sampling; `0` picks the
        most likely token (greedy decoding). Default `1.0`. (Keyword only.)
    - `key`: PRNG key for sampling. (Keyword only.)

    **Returns:** the prompt followed by the new tokens, shape
    `(prompt_len + num_tokens,)`.
    """
    prompt = jnp.asarray(prompt)
    if prompt.ndim != 1 or prompt.shape[0] < 1:
        raise ValueError(
            "generate: `prompt` must have shape (prompt_len,) with prompt_len >= 1, "
            f"got shape {prompt.shape}."
        )
    num_tokens = positive_int(num_tokens, "num_tokens")
    if not temperature >= 0:
        raise ValueError(f"generate: `temperature` must be >= 0, got {temperature!r}.")
    start = prompt.shape[0]
    total = start + num_tokens
    if total > model.max_len:
        raise ValueError(
            f"generate: the prompt ({start} tokens) plus `num_tokens={num_tokens}` "
            f"exceeds the model's `max_len={model.max_len}`."
        )
    buffer = jnp.zeros(total, prompt.dtype).at[:start].set(prompt)

    def step(buffer, x):
        i, k = x
        logits = model(buffer)[i - 1]
        if temperature == 0:
            token = jnp.argmax(logits)
        else:
            token = jr.categorical(k, logits / temperature)
        return buffer.at[i].set(token.astype(buffer.dtype)), None

    positions = jnp.arange(start, total)
    buffer, _ = jax.lax.scan(step, buffer, (positions, jr.split(key, num_tokens)))
    return buffer
