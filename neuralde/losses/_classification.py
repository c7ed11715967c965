import math
from numbers import Number

import jax
import jax.numpy as jnp
import optax
from jaxtyping import Array, ArrayLike, Bool, Float, Int, Real

from ._common import (
    as_probs,
    binary_targets,
    broadcast_to_loss,
    check_class_axis,
    check_labels,
    check_range,
    class_targets,
    floating,
    hyper,
    reduce,
    Reduction,
)


def cross_entropy(
    logits: Float[ArrayLike, "*batch classes"],
    labels: Int[ArrayLike, "*batch"] | Float[ArrayLike, "*batch classes"],
    *,
    label_smoothing: float = 0.0,
    class_weights: Float[ArrayLike, " classes"] | None = None,
    weights: Float[ArrayLike, "*#batch"] | None = None,
    mask: Bool[ArrayLike, "*#batch"] | None = None,
    reduction: Reduction = "mean",
) -> Float[Array, "..."]:
    """Softmax cross-entropy, $-\\sum_c t_c \\log \\operatorname{softmax}(x)_c$.

    The log-softmax is $x_c - \\max x - \\log\\sum_k e^{x_k - \\max x}$, finite for
    any finite logits. Wraps `optax.losses.softmax_cross_entropy` and
    `optax.losses.softmax_cross_entropy_with_integer_labels` (whichever matches the
    labels), and `optax.losses.smooth_labels`; it adds the choice of label format
    by shape, the check of the labels, class weights, weights, the mask and the
    reduction, none of which optax's functions take.

    **Arguments:**

    - `logits`: unnormalised log-probabilities $x$, classes on the last axis.
    - `labels`: integer class indices of shape `logits.shape[:-1]`, or one-hot or
        probability targets $t$ of the shape of `logits`. (The shape decides.)
    - `label_smoothing`: $\\varepsilon \\in [0, 1]$; the targets become
        $(1 - \\varepsilon) t + \\varepsilon / C$ for $C$ classes.
    - `class_weights`: a weight per class. An example weighs $\\sum_c w_c t_c$ (the
        weight of its class, for hard labels; the targets before smoothing), and
        `"mean"` divides by the total weight, as PyTorch does.
    - `weights`, `mask`, `reduction`: as described in `neuralde.losses`, over the
        examples `logits.shape[:-1]`.
    """
    return softmax_cross_entropy(
        "cross_entropy",
        logits,
        labels,
        label_smoothing=label_smoothing,
        class_weights=class_weights,
        weights=weights,
        mask=mask,
        reduction=reduction,
    )


def softmax_cross_entropy(
    name, logits, labels, *, label_smoothing, class_weights, weights, mask, reduction
) -> Array:
    logits = floating(name, "logits", logits)
    indices, targets = class_targets(name, logits, labels, mask)
    no_smoothing = isinstance(label_smoothing, Number) and label_smoothing == 0
    if not no_smoothing:
        label_smoothing = hyper(name, "label_smoothing", label_smoothing, logits.dtype)
        label_smoothing = check_range(name, "label_smoothing", label_smoothing, 0, 1)
    if indices is not None and no_smoothing:
        loss = optax.losses.softmax_cross_entropy_with_integer_labels(logits, indices)
    else:
        smoothed = probs = as_probs(indices, targets, logits)
        if not no_smoothing:
            smoothed = optax.losses.smooth_labels(probs, label_smoothing)
        loss = optax.losses.softmax_cross_entropy(logits, smoothed)
    if class_weights is not None:
        w = class_weights_of(name, class_weights, logits)
        w = w[indices] if indices is not None else probs @ w
        weights = _times(name, weights, w)
    return reduce(name, loss, weights=weights, mask=mask, reduction=reduction)


def binary_cross_entropy(
    predictions: Float[ArrayLike, "*batch"],
    targets: Real[ArrayLike, "*batch"],
    *,
    from_logits: bool = True,
    label_smoothing: float = 0.0,
    weights: Float[ArrayLike, "*#batch"] | None = None,
    mask: Bool[ArrayLike, "*#batch"] | None = None,
    reduction: Reduction = "mean",
) -> Float[Array, "..."]:
    """Binary cross-entropy, $-t \\log p - (1 - t) \\log(1 - p)$ per entry.

    From logits $x$ ($p = \\sigma(x)$, the default) it is computed as
    $-t \\log\\sigma(x) - (1 - t)\\log\\sigma(-x)$, finite for any finite logit;
    this wraps `optax.losses.sigmoid_binary_cross_entropy`, adding label smoothing,
    the check of the targets, the weights, the mask and the reduction. From
    probabilities, each logarithm is clamped below at $-100$ (as in PyTorch), so
    that a probability of exactly 0 or 1 gives a large finite loss and gradient
    rather than `inf` or `nan`. Prefer logits: they keep the information that
    probabilities near 0 and 1 round away.

    **Arguments:**

    - `predictions`: logits, or probabilities in $[0, 1]$ with `from_logits=False`
        (checked, also under `jit`).
    - `targets`: $t$, of the same shape: 0/1, booleans, or probabilities.
    - `from_logits`: whether `predictions` are logits (default) or probabilities.
    - `label_smoothing`: $\\varepsilon \\in [0, 1]$; the targets become
        $(1 - \\varepsilon) t + \\varepsilon / 2$.
    - `weights`, `mask`, `reduction`: as described in `neuralde.losses`.
    """
    return sigmoid_cross_entropy(
        "binary_cross_entropy",
        predictions,
        targets,
        from_logits=from_logits,
        label_smoothing=label_smoothing,
        weights=weights,
        mask=mask,
        reduction=reduction,
    )


def sigmoid_cross_entropy(
    name,
    predictions,
    targets,
    *,
    from_logits,
    label_smoothing,
    weights,
    mask,
    reduction,
) -> Array:
    x = floating(name, "predictions", predictions)
    t = binary_targets(name, x, targets)
    if not (isinstance(label_smoothing, Number) and label_smoothing == 0):
        eps = hyper(name, "label_smoothing", label_smoothing, x.dtype)
        eps = check_range(name, "label_smoothing", eps, 0, 1)
        t = (1 - eps) * t + eps / 2
    if from_logits:
        loss = optax.losses.sigmoid_binary_cross_entropy(x, t)
    else:
        p = check_range(
            name,
            "predictions",
            x,
            0,
            1,
            hint=" With `from_logits=False` they are probabilities; pass logits with "
            "`from_logits=True`.",
        )
        loss = -(t * _clamped_log(p) + (1 - t) * _clamped_log1m(p))
    return reduce(name, loss, weights=weights, mask=mask, reduction=reduction)


def _clamped_log(p: Array) -> Array:
    # max(log p, -100), with a zero (not nan) gradient at p = 0.
    pos = p > 0
    return jnp.where(pos, jnp.maximum(jnp.log(jnp.where(pos, p, 1)), -100), -100)


def _clamped_log1m(p: Array) -> Array:
    # max(log(1 - p), -100), with a zero (not nan) gradient at p = 1.
    below = p < 1
    return jnp.where(below, jnp.maximum(jnp.log1p(-jnp.where(below, p, 0)), -100), -100)


def focal(
    logits: Float[ArrayLike, "*batch"],
    labels: Real[ArrayLike, "*batch"] | Int[ArrayLike, "*batch_without_classes"],
    *,
    alpha: float | None = 0.25,
    gamma: float = 2.0,
    class_weights: Float[ArrayLike, " classes"] | None = None,
    weights: Float[ArrayLike, "*#batch"] | None = None,
    mask: Bool[ArrayLike, "*#batch"] | None = None,
    reduction: Reduction = "mean",
) -> Float[Array, "..."]:
    """The sigmoid focal loss of Lin et al. (2017), per logit.

    $-\\alpha_t (1 - p_t)^\\gamma \\log p_t$, where $p_t$ is the predicted probability
    $\\sigma(x)$ of the target (that of $t = 1$ is $p$, of $t = 0$ is $1 - p$) and
    $\\alpha_t = \\alpha$ for positives, $1 - \\alpha$ for negatives. The factor
    $(1 - p_t)^\\gamma$ down-weights the many easy examples. As in the paper, each
    class is an independent binary problem: integer class labels are expanded to
    one-hot targets, and the loss keeps the shape of `logits` (sum over the last axis
    with `reduction="none"` for a per-example loss, and see the paper for its
    normalisation by the number of positives).

    Wraps `optax.losses.sigmoid_focal_loss` (computed in log space, finite for any
    finite logit), adding integer labels, class weights, the weights, the mask and the
    reduction.

    **Arguments:**

    - `logits`: $x$.
    - `labels`: binary targets (0/1 or probabilities) of the shape of `logits`; or
        integer class indices of shape `logits.shape[:-1]`, classes on the last
        axis of `logits`.
    - `alpha`: $\\alpha \\in [0, 1]$, the weight of positives; `None` for none.
        Default 0.25, the paper's choice with $\\gamma = 2$.
    - `gamma`: $\\gamma \\ge 0$; $\\gamma = 0$ is the ($\\alpha$-weighted) binary
        cross-entropy.
    - `class_weights`: with integer labels, a weight per class applied to all the
        logits of an example of that class, e.g. `class_balanced_weights` (the
        class-balanced focal loss of Cui et al. 2019).
    - `weights`, `mask`, `reduction`: as described in `neuralde.losses`, over the
        shape of `logits` (use `mask[..., None]` for a mask per example).

    ??? cite "Reference"
        ```bibtex
        @inproceedings{lin2017focal,
            title={Focal Loss for Dense Object Detection},
            author={Lin, Tsung-Yi and Goyal, Priya and Girshick, Ross and He, Kaiming
                    and Doll{\\'a}r, Piotr},
            booktitle={Proceedings of the IEEE International Conference on Computer
                       Vision (ICCV)},
            pages={2980--2988}, year={2017}
        }
        ```
    """
    name = "focal"
    x = floating(name, "logits", logits)
    labels = jnp.asarray(labels)
    class_w = None
    if labels.shape == x.shape:
        t = binary_targets(name, x, labels)
        if class_weights is not None:
            raise ValueError(
                f"{name}: `class_weights` need integer class labels of shape "
                f"{x.shape[:-1]}; for weights per logit, pass `weights=`."
            )
    elif x.ndim >= 1 and labels.shape == x.shape[:-1]:
        if not jnp.issubdtype(labels.dtype, jnp.integer):
            raise TypeError(
                f"{name}: `labels` of shape {labels.shape} are read as class indices "
                f"and must be integers, got dtype {labels.dtype}."
            )
        m = None
        if mask is not None:
            m = broadcast_to_loss(name, "mask", mask, x.shape)
            m = jnp.any(jnp.broadcast_to(m, x.shape), axis=-1)
        labels = check_labels(name, labels, x.shape[-1], m)
        t = jax.nn.one_hot(labels, x.shape[-1], dtype=x.dtype)
        if class_weights is not None:
            class_w = class_weights_of(name, class_weights, x)[labels][..., None]
    else:
        raise ValueError(
            f"{name}: `labels` must have the shape of `logits`, {x.shape} (binary "
            f"targets), or {x.shape[:-1]} (integer class indices); got "
            f"{labels.shape}."
        )
    if alpha is not None:
        alpha = check_range(name, "alpha", hyper(name, "alpha", alpha, x.dtype), 0, 1)
    gamma = hyper(name, "gamma", gamma, x.dtype)
    gamma = check_range(name, "gamma", gamma, 0, math.inf)
    loss = optax.losses.sigmoid_focal_loss(x, t, alpha=alpha, gamma=gamma)
    if class_w is not None:
        weights = _times(name, weights, jnp.broadcast_to(class_w, x.shape))
    return reduce(name, loss, weights=weights, mask=mask, reduction=reduction)


def class_balanced_weights(
    counts: Real[ArrayLike, " classes"], *, beta: float = 0.999
) -> Float[Array, " classes"]:
    """Class weights from the effective number of samples (Cui et al. 2019).

    $w_c \\propto (1 - \\beta) / (1 - \\beta^{n_c})$ for $n_c$ examples of class $c$,
    normalised to sum to the number of classes. $\\beta = 0$ weighs all classes
    equally; $\\beta \\to 1$ tends to inverse class frequency. Pass the result as
    `class_weights=` to `cross_entropy` or `focal`.

    **Arguments:**

    - `counts`: $n_c \\ge 1$, the number of training examples of each class.
    - `beta`: $\\beta \\in [0, 1)$. The paper tries 0.9 to 0.9999.

    **Returns:** the weights, one per class.

    ??? cite "Reference"
        ```bibtex
        @inproceedings{cui2019class,
            title={Class-Balanced Loss Based on Effective Number of Samples},
            author={Cui, Yin and Jia, Menglin and Lin, Tsung-Yi and Song, Yang and
                    Belongie, Serge},
            booktitle={Proceedings of the IEEE/CVF Conference on Computer Vision and
                       Pattern Recognition (CVPR)},
            pages={9268--9277}, year={2019}
        }
        ```
    """
    name = "class_balanced_weights"
    counts = jnp.asarray(counts)
    dtype = counts.dtype
    if not jnp.issubdtype(dtype, jnp.floating):
        dtype = jnp.result_type(float)
    counts = hyper(name, "counts", counts, dtype)
    if counts.ndim != 1:
        raise ValueError(
            f"{name}: `counts` must be a vector, one count per class; got shape "
            f"{counts.shape}."
        )
    counts = check_range(
        name, "counts", counts, 1, math.inf, hint=" Every class needs an example."
    )
    beta = hyper(name, "beta", beta, dtype)
    beta = check_range(name, "beta", beta, 0, 1, open_hi=True)
    # 1 - beta^n, accurate for beta near 1; beta = 0 gives log(0) = -inf and 1.
    effective = -jnp.expm1(counts * jnp.log(beta)) / (1 - beta)
    w = 1 / effective
    return w * counts.shape[0] / jnp.sum(w)


def kl_divergence(
    logits: Float[ArrayLike, "*batch classes"],
    targets: Float[ArrayLike, "*batch classes"] | Int[ArrayLike, "*batch"],
    *,
    weights: Float[ArrayLike, "*#batch"] | None = None,
    mask: Bool[ArrayLike, "*#batch"] | None = None,
    reduction: Reduction = "mean",
) -> Float[Array, "..."]:
    """$\\mathrm{KL}(t \\,\\|\\, q) = \\sum_c t_c (\\log t_c - \\log q_c)$ from the
    targets $t$ to the prediction $q = \\operatorname{softmax}(x)$, e.g. for
    distillation.

    Takes logits like the other classification losses (log-probabilities work too:
    the log-softmax leaves them unchanged), where `optax.losses.kl_divergence`, which
    this wraps, takes log-probabilities; adds integer labels (for which the KL is the
    cross-entropy), the weights, the mask and the reduction. $0 \\log 0 = 0$.

    **Arguments:**

    - `logits`: $x$, classes on the last axis.
    - `targets`: probabilities $t$ of the shape of `logits`, or integer class indices
        of shape `logits.shape[:-1]`.
    - `weights`, `mask`, `reduction`: as described in `neuralde.losses`, over
        `logits.shape[:-1]`.
    """
    name = "kl_divergence"
    x = floating(name, "logits", logits)
    indices, targets = class_targets(name, x, targets, mask)
    log_q = jax.nn.log_softmax(x, axis=-1)
    if indices is not None:
        loss = -jnp.take_along_axis(log_q, indices[..., None], axis=-1)[..., 0]
    else:
        loss = optax.losses.kl_divergence(log_q, targets)
    return reduce(name, loss, weights=weights, mask=mask, reduction=reduction)


def class_weights_of(name: str, class_weights: ArrayLike, logits: Array) -> Array:
    check_class_axis(name, "logits", logits)
    w = floating(name, "class_weights", class_weights).astype(logits.dtype)
    if w.shape != logits.shape[-1:]:
        raise ValueError(
            f"{name}: `class_weights` must have one weight per class, shape "
            f"{logits.shape[-1:]}; got {w.shape}."
        )
    return w


def _times(name: str, weights: ArrayLike | None, w: Array) -> Array:
    """Per-example `weights` (if any) times the class weights `w`."""
    if weights is None:
        return w
    return broadcast_to_loss(name, "weights", weights, w.shape) * w
