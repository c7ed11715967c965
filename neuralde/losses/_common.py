"""The conventions shared by every loss: reductions, weights and masks, and checks of
the inputs."""

import math
from typing import Literal

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike


Reduction = Literal["mean", "sum", "none"]
REDUCTIONS = ("mean", "sum", "none")


def check_reduction(name: str, reduction: str) -> None:
    if reduction not in REDUCTIONS:
        raise ValueError(
            f"{name}: `reduction` must be one of 'mean', 'sum' or 'none', got "
            f"{reduction!r}."
        )


def floating(name: str, arg: str, x: ArrayLike) -> Array:
    """`x` as an array of a floating dtype, or a `TypeError`."""
    x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise TypeError(
            f"{name}: `{arg}` must be floating point, got dtype {x.dtype}. Cast it, "
            f"e.g. `{arg}.astype(jnp.float32)`."
        )
    return x


def pair(
    name: str,
    predictions: ArrayLike,
    targets: ArrayLike,
    arg: str = "predictions",
    target_arg: str = "targets",
) -> tuple[Array, Array]:
    """Predictions and targets of one shape; the targets in the predictions' dtype."""
    predictions = floating(name, arg, predictions)
    targets = jnp.asarray(targets)
    if predictions.shape != targets.shape:
        raise ValueError(
            f"{name}: `{arg}` has shape {predictions.shape} but `{target_arg}` has "
            f"shape {targets.shape}; they must be equal. Broadcasting is not "
            "applied, as it would silently compare the wrong entries (e.g. `(n,)` "
            "against `(n, 1)`)."
        )
    return predictions, targets.astype(predictions.dtype)


def hyper(name: str, arg: str, x: ArrayLike, dtype) -> Array:
    """A hyper-parameter (a Python number or an array) as an array of `dtype`."""
    x = jnp.asarray(x)
    if not (jnp.issubdtype(x.dtype, jnp.number) or x.dtype == bool):
        raise TypeError(f"{name}: `{arg}` must be a number, got dtype {x.dtype}.")
    return x.astype(dtype)


def _traced(*xs) -> bool:
    return any(isinstance(x, jax.core.Tracer) for x in xs)


def _describe(arg: str, x: Array, bad: Array) -> str:
    if x.size == 1:
        return f"got {arg}={x.reshape(()).item()!r}"
    shown = np.asarray(x)[np.broadcast_to(np.asarray(bad), x.shape)]
    n = f"{shown.size} entr{'y' if shown.size == 1 else 'ies'}"
    return f"got {n} outside, e.g. {shown[:3].tolist()}"


def check_range(
    name: str,
    arg: str,
    x: Array,
    lo: float = -math.inf,
    hi: float = math.inf,
    *,
    open_lo: bool = False,
    open_hi: bool = False,
    hint: str = "",
) -> Array:
    """Check that every entry of `x` lies in the interval from `lo` to `hi` (NaN does
    not).

    A concrete `x` raises a `ValueError` now; a traced one is checked when it runs,
    with `eqx.error_if`. **Returns:** `x`, to be used in place of the input so that
    the runtime check is part of the computation.
    """
    inside = (x > lo if open_lo else x >= lo) & (x < hi if open_hi else x <= hi)
    bad = ~inside
    interval = f"{'(' if open_lo else '['}{lo:g}, {hi:g}{')' if open_hi else ']'}"
    message = f"{name}: `{arg}` must lie in {interval}"
    if _traced(x, bad):
        return eqx.error_if(x, jnp.any(bad), f"{message}.{hint}")
    if bool(jnp.any(bad)):
        raise ValueError(f"{message}; {_describe(arg, x, bad)}.{hint}")
    return x


def broadcast_to_loss(
    name: str, arg: str, x: ArrayLike, shape, what: str = "the per-example loss"
) -> Array:
    """`x`, checked to broadcast to `shape` (NumPy rules), that of `what`."""
    x = jnp.asarray(x)
    try:
        ok = np.broadcast_shapes(x.shape, tuple(shape)) == tuple(shape)
    except ValueError:
        ok = False
    if not ok:
        hint = ""
        if 0 < x.ndim < len(shape) and tuple(shape[: x.ndim]) == x.shape:
            extra = len(shape) - x.ndim
            hint = (
                f" To give one value per leading index, add trailing axes: "
                f"`{arg}[{', '.join([':'] * x.ndim + ['None'] * extra)}]`."
            )
        raise ValueError(
            f"{name}: `{arg}` of shape {x.shape} does not broadcast to {what}, of "
            f"shape {tuple(shape)}.{hint}"
        )
    return x


def reduce(
    name: str,
    loss: Array,
    *,
    weights: ArrayLike | None = None,
    mask: ArrayLike | None = None,
    reduction: str = "mean",
) -> Array:
    """Apply `weights` and `mask` to the per-example `loss`, then `reduction`.

    - `"none"`: $w_i m_i \\ell_i$ (masked entries are exactly zero, even where the
        loss is not finite).
    - `"sum"`: $\\sum_i w_i m_i \\ell_i$.
    - `"mean"`: $\\sum_i w_i m_i \\ell_i / \\sum_i w_i m_i$, the weighted mean over
        the entries left in (`0` when none is); the plain mean without weights or
        mask. An empty batch raises a `ValueError`.
    """
    check_reduction(name, reduction)
    scale = None
    if weights is not None:
        weights = broadcast_to_loss(name, "weights", weights, loss.shape)
        scale = weights.astype(loss.dtype)
    if mask is not None:
        mask = broadcast_to_loss(name, "mask", mask, loss.shape).astype(bool)
        loss = jnp.where(mask, loss, 0)
        m = mask.astype(loss.dtype)
        scale = m if scale is None else scale * m
    if scale is not None:
        loss = loss * scale
    if reduction == "none":
        return loss
    if reduction == "sum":
        return jnp.sum(loss)
    if loss.size == 0:
        raise ValueError(
            f"{name}: the batch is empty (per-example loss of shape {loss.shape}), "
            "so its mean is undefined. Skip empty batches, or use "
            "`reduction='sum'`, which is 0 for an empty batch."
        )
    if scale is None:
        return jnp.mean(loss)
    total = jnp.sum(jnp.broadcast_to(scale, loss.shape))
    return jnp.sum(loss) / jnp.where(total > 0, total, 1)


def check_class_axis(name: str, arg: str, logits: Array) -> None:
    if logits.ndim == 0:
        raise ValueError(
            f"{name}: `{arg}` needs a trailing class axis, got a scalar. For a "
            "single binary logit use `binary_cross_entropy`."
        )


def check_labels(
    name: str,
    labels: Array,
    num_classes: int,
    mask: ArrayLike | None = None,
    what: tuple[str, str] = ("class labels", "classes"),
) -> Array:
    """Check integer class labels against `num_classes` (where `mask` is true) and
    clip them into range, so that masked entries index a valid class."""
    bad = (labels < 0) | (labels >= num_classes)
    if mask is not None:
        mask = broadcast_to_loss(name, "mask", mask, labels.shape).astype(bool)
        bad = bad & mask
    message = (
        f"{name}: {what[0]} must lie in [0, {num_classes - 1}] for {num_classes} "
        f"{what[1]}"
    )
    hint = " Padding labels outside that range must be excluded with `mask=`."
    if _traced(labels, bad):
        labels = eqx.error_if(labels, jnp.any(bad), f"{message}.{hint}")
    elif bool(jnp.any(bad)):
        shown = np.asarray(labels)[np.broadcast_to(np.asarray(bad), labels.shape)]
        raise ValueError(f"{message}; got {shown[:3].tolist()}.{hint}")
    return jnp.clip(labels, 0, num_classes - 1)


def class_targets(
    name: str, logits: Array, labels: ArrayLike, mask: ArrayLike | None = None
) -> tuple[Array | None, Array | None]:
    """Read `labels` against `logits` of shape `(..., classes)`.

    By shape: `labels.shape == logits.shape[:-1]` are integer class indices;
    `labels.shape == logits.shape` are one-hot or probability targets along the last
    axis. **Returns:** `(indices, None)` with the checked integer indices, or
    `(None, targets)` with the probability targets in the logits' dtype.
    """
    check_class_axis(name, "logits", logits)
    labels = jnp.asarray(labels)
    classes = logits.shape[-1]
    if labels.shape == logits.shape[:-1]:
        if not jnp.issubdtype(labels.dtype, jnp.integer):
            raise TypeError(
                f"{name}: `labels` of shape {labels.shape} (the logits' shape without "
                "the class axis) are read as class indices and must be integers, got "
                f"dtype {labels.dtype}. Probability targets have the logits' shape "
                f"{logits.shape}."
            )
        return check_labels(name, labels, classes, mask), None
    if labels.shape == logits.shape:
        targets = check_range(
            name, "labels", labels.astype(logits.dtype), 0.0, 1.0, hint=_PROBS_HINT
        )
        return None, _check_rows_sum_to_one(name, targets, mask)
    raise ValueError(
        f"{name}: `labels` must have shape {logits.shape[:-1]} (integer class "
        f"indices) or {logits.shape} (one-hot or probabilities along the class "
        f"axis, the last axis of `logits`), got {labels.shape}."
    )


_PROBS_HINT = " One-hot and probability targets are probabilities."


def _check_rows_sum_to_one(name: str, targets: Array, mask) -> Array:
    """Probability targets must sum to one along the class axis (masked-out rows
    excepted), to a tolerance of the dtype's round-off over the classes."""
    eps = float(jnp.finfo(targets.dtype).eps)
    tol = max(1e-6, 16 * eps * targets.shape[-1])
    bad = jnp.abs(jnp.sum(targets, axis=-1) - 1) > tol
    if mask is not None:
        bad = bad & jnp.broadcast_to(jnp.asarray(mask, bool), bad.shape)
    message = (
        f"{name}: probability `labels` must sum to one along the class axis (the "
        f"last axis), to within {tol:.1e}"
    )
    if _traced(targets, bad):
        return eqx.error_if(targets, jnp.any(bad), f"{message}.")
    if bool(jnp.any(bad)):
        first = np.argwhere(np.asarray(bad))[0]
        total = float(jnp.sum(targets, axis=-1)[tuple(first)])
        raise ValueError(
            f"{message}; the row at index {tuple(first.tolist())} sums to {total:.6g}. "
            "Normalise them, e.g. `labels / labels.sum(-1, keepdims=True)`, or pass "
            "integer class indices."
        )
    return targets


def as_probs(indices: Array | None, targets: Array | None, logits: Array) -> Array:
    """The targets of `class_targets` as probabilities along the class axis."""
    if indices is None:
        return targets
    return jax.nn.one_hot(indices, logits.shape[-1], dtype=logits.dtype)


def binary_targets(name: str, logits: Array, targets: ArrayLike) -> Array:
    """Binary targets (0/1, booleans or probabilities) of the logits' shape."""
    targets = jnp.asarray(targets)
    if targets.shape != logits.shape:
        raise ValueError(
            f"{name}: `targets` must have the shape of the predictions, "
            f"{logits.shape}, one target per logit; got {targets.shape}."
        )
    return check_range(name, "targets", targets.astype(logits.dtype), 0.0, 1.0)
