import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Bool, Float, Int

from ._classification import softmax_cross_entropy
from ._common import broadcast_to_loss, floating, Reduction


def next_token(
    logits: Float[ArrayLike, "*batch length vocab"],
    tokens: Int[ArrayLike, "*batch length"],
    *,
    mask: Bool[ArrayLike, "*#batch length"] | None = None,
    label_smoothing: float = 0.0,
    reduction: Reduction = "mean",
) -> Float[Array, "..."]:
    """The next-token (language-modelling) cross-entropy of a decoder such as GPT.

    The logits at position $i$ predict token $i + 1$: the targets are the input
    tokens shifted left by one, `tokens[..., 1:]`, against `logits[..., :-1, :]`.
    A prediction counts where both its input token and its target are real (not
    padding), which serves left and right padding alike. `"mean"` is the mean over
    the real target tokens of the whole batch (each token weighs the same, not each
    sequence).

    **Arguments:**

    - `logits`: the model's output for the input `tokens`, vocabulary on the last
        axis.
    - `tokens`: the integer input tokens, `logits.shape[:-1]`. Padding may hold any
        value, such as `-1`, where `mask` is false.
    - `mask`: the padding mask, `True` at real tokens, broadcastable to `tokens`.
    - `label_smoothing`: as for `cross_entropy`.
    - `reduction`: `"mean"` (default), `"sum"`, or `"none"`: the masked per-token
        losses, of shape `tokens[..., 1:].shape`.
    """
    name = "next_token"
    logits = floating(name, "logits", logits)
    tokens = jnp.asarray(tokens)
    if logits.ndim < 2 or tokens.shape != logits.shape[:-1]:
        raise ValueError(
            f"{name}: `logits` must have shape (..., length, vocab) and `tokens` "
            f"shape (..., length); got logits {logits.shape} and tokens "
            f"{tokens.shape}."
        )
    if tokens.shape[-1] < 2:
        raise ValueError(
            f"{name}: a sequence of length {tokens.shape[-1]} has no next token to "
            "predict; it needs length >= 2."
        )
    target_mask = None
    if mask is not None:
        mask = broadcast_to_loss(name, "mask", mask, tokens.shape, "`tokens`")
        mask = jnp.broadcast_to(mask, tokens.shape).astype(bool)
        target_mask = mask[..., 1:] & mask[..., :-1]
    return softmax_cross_entropy(
        name,
        logits[..., :-1, :],
        tokens[..., 1:],
        label_smoothing=label_smoothing,
        class_weights=None,
        weights=None,
        mask=target_mask,
        reduction=reduction,
    )
