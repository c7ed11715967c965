import math

import jax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Bool, Float, Int, Real

from ._classification import class_weights_of
from ._common import (
    binary_targets,
    check_labels,
    check_range,
    floating,
    hyper,
    reduce,
    Reduction,
)


def dice(
    predictions: Float[ArrayLike, " batch *spatial classes"],
    targets: Real[ArrayLike, " batch *spatial classes"]
    | Int[ArrayLike, " batch *spatial"],
    *,
    from_logits: bool = True,
    smooth: float = 1.0,
    class_weights: Float[ArrayLike, " classes"] | None = None,
    weights: Float[ArrayLike, " #batch"] | None = None,
    mask: Bool[ArrayLike, " #batch"] | None = None,
    reduction: Reduction = "mean",
) -> Float[Array, "..."]:
    """Soft Dice loss for segmentation (Milletari et al. 2016), per example.

    For each example and class $c$, over the pixels $i$:
    $$1 - \\frac{2 \\sum_i p_{ic} t_{ic} + s}{\\sum_i p_{ic} + \\sum_i t_{ic} + s},$$
    then the mean over the classes (weighted by `class_weights`). The probabilities
    $p$ are the softmax over the class axis, or the sigmoid for a single class.

    Written here rather than wrapping `optax.losses.dice_loss`: optax checks that
    probability inputs sum to one with a Python `if`, which fails under `jit` and
    rejects single-class sigmoid probabilities; and its `reduction` runs over the
    classes, where neuralde's runs over the batch, with weights and a mask.

    **Arguments:**

    - `predictions`: logits (or probabilities, with `from_logits=False`) of shape
        `(batch, *spatial, classes)`; `classes = 1` for binary segmentation.
    - `targets`: one-hot or probability maps of the same shape, or integer class
        maps of shape `(batch, *spatial)` (0/1 for a single class).
    - `from_logits`: whether `predictions` are logits (default) or probabilities.
    - `smooth`: $s \\ge 0$, added to the numerator and denominator; it gives an
        empty class (no target, no prediction) a loss of zero.
    - `class_weights`: a weight per class for the mean over the classes.
    - `weights`, `mask`, `reduction`: as described in `neuralde.losses`, over the
        batch.

    ??? cite "Reference"
        ```bibtex
        @inproceedings{milletari2016v,
            title={V-Net: Fully Convolutional Neural Networks for Volumetric Medical
                   Image Segmentation},
            author={Milletari, Fausto and Navab, Nassir and Ahmadi, Seyed-Ahmad},
            booktitle={Fourth International Conference on 3D Vision (3DV)},
            pages={565--571}, year={2016}
        }
        ```
    """
    name = "dice"
    x = floating(name, "predictions", predictions)
    if x.ndim < 2:
        raise ValueError(
            f"{name}: `predictions` must have shape (batch, *spatial, classes), got "
            f"{x.shape}."
        )
    classes = x.shape[-1]
    if from_logits:
        p = jax.nn.sigmoid(x) if classes == 1 else jax.nn.softmax(x, axis=-1)
    else:
        p = check_range(name, "predictions", x, 0, 1)
    t = jnp.asarray(targets)
    if t.shape == x.shape[:-1] and classes == 1:
        t = binary_targets(name, x[..., 0], t)[..., None]
    elif t.shape == x.shape[:-1]:
        if not jnp.issubdtype(t.dtype, jnp.integer):
            raise TypeError(
                f"{name}: `targets` of shape {t.shape} are read as class maps and "
                f"must be integers, got dtype {t.dtype}."
            )
        t = jax.nn.one_hot(check_labels(name, t, classes), classes, dtype=x.dtype)
    else:
        t = binary_targets(name, x, t)
    smooth = hyper(name, "smooth", smooth, x.dtype)
    smooth = check_range(name, "smooth", smooth, 0, math.inf)
    axes = tuple(range(1, x.ndim - 1))
    overlap = jnp.sum(p * t, axis=axes)
    total = jnp.sum(p, axis=axes) + jnp.sum(t, axis=axes)
    per_class = 1 - (2 * overlap + smooth) / (total + smooth)
    if class_weights is None:
        loss = jnp.mean(per_class, axis=-1)
    else:
        w = class_weights_of(name, class_weights, x)
        loss = per_class @ w / jnp.sum(w)
    return reduce(name, loss, weights=weights, mask=mask, reduction=reduction)
