import math

import jax
import jax.numpy as jnp
from jax.scipy.special import gammaln
from jaxtyping import Array, ArrayLike, Bool, Float, Int, Real

from ._classification import sigmoid_cross_entropy, softmax_cross_entropy
from ._common import (
    broadcast_to_loss,
    check_class_axis,
    check_range,
    floating,
    hyper,
    pair,
    reduce,
    Reduction,
)


_HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)


def gaussian_nll(
    mean: Float[ArrayLike, "*batch"],
    targets: Real[ArrayLike, "*batch"],
    *,
    scale: Float[ArrayLike, "*#batch"] | None = None,
    log_scale: Float[ArrayLike, "*#batch"] | None = None,
    weights: Float[ArrayLike, "*#batch"] | None = None,
    mask: Bool[ArrayLike, "*#batch"] | None = None,
    reduction: Reduction = "mean",
) -> Float[Array, "..."]:
    """Negative log-density of a Gaussian with a predicted (learned) variance.

    $\\tfrac12 z^2 + \\log\\sigma + \\tfrac12\\log 2\\pi$ with
    $z = (y - \\mu)/\\sigma$, per entry: independent coordinates, so sum over an
    axis (with `reduction="none"`) for a diagonal multivariate Gaussian. The
    constant is included, so that this is exactly $-\\log p(y)$.

    **Arguments:**

    - `mean`: $\\mu$.
    - `targets`: $y$, the shape of `mean`.
    - `scale`: the standard deviation $\\sigma > 0$, broadcastable to `mean`; or
    - `log_scale`: $\\log\\sigma$ instead, the unconstrained output a network
        usually predicts. Give exactly one of the two.
    - `weights`, `mask`, `reduction`: as described in `neuralde.losses`.
    """
    name = "gaussian_nll"
    mu, y = pair(name, mean, targets, "mean")
    s, log_s = _scale(name, scale, log_scale, mu)
    z = (y - mu) / s
    loss = 0.5 * z**2 + log_s + _HALF_LOG_2PI
    return reduce(name, loss, weights=weights, mask=mask, reduction=reduction)


def laplace_nll(
    loc: Float[ArrayLike, "*batch"],
    targets: Real[ArrayLike, "*batch"],
    *,
    scale: Float[ArrayLike, "*#batch"] | None = None,
    log_scale: Float[ArrayLike, "*#batch"] | None = None,
    weights: Float[ArrayLike, "*#batch"] | None = None,
    mask: Bool[ArrayLike, "*#batch"] | None = None,
    reduction: Reduction = "mean",
) -> Float[Array, "..."]:
    """Negative log-density of a Laplace distribution,
    $|y - \\mu|/b + \\log b + \\log 2$ per entry.

    **Arguments:** as for `gaussian_nll`, with the location `loc` $\\mu$ and the
    scale $b$ (`scale` or `log_scale`).
    """
    name = "laplace_nll"
    mu, y = pair(name, loc, targets, "loc")
    b, log_b = _scale(name, scale, log_scale, mu)
    loss = jnp.abs(y - mu) / b + log_b + math.log(2)
    return reduce(name, loss, weights=weights, mask=mask, reduction=reduction)


def student_t_nll(
    loc: Float[ArrayLike, "*batch"],
    targets: Real[ArrayLike, "*batch"],
    *,
    df: float | Float[ArrayLike, "*#batch"],
    scale: Float[ArrayLike, "*#batch"] | None = None,
    log_scale: Float[ArrayLike, "*#batch"] | None = None,
    weights: Float[ArrayLike, "*#batch"] | None = None,
    mask: Bool[ArrayLike, "*#batch"] | None = None,
    reduction: Reduction = "mean",
) -> Float[Array, "..."]:
    """Negative log-density of Student's t distribution, a heavy-tailed alternative
    to `gaussian_nll`.

    With $z = (y - \\mu)/s$ and $\\nu$ degrees of freedom:
    $\\tfrac{\\nu + 1}{2}\\log(1 + z^2/\\nu) + \\log s + \\tfrac12\\log(\\nu\\pi)
    + \\log\\Gamma(\\tfrac\\nu2) - \\log\\Gamma(\\tfrac{\\nu + 1}{2})$ per entry.

    **Arguments:** as for `gaussian_nll`, with the location `loc` $\\mu$, the scale
    $s$ (`scale` or `log_scale`), and

    - `df`: $\\nu > 0$, a number or an array broadcastable to `loc` (it may be
        learned).
    """
    name = "student_t_nll"
    mu, y = pair(name, loc, targets, "loc")
    s, log_s = _scale(name, scale, log_scale, mu)
    df = hyper(name, "df", df, mu.dtype)
    df = broadcast_to_loss(name, "df", df, mu.shape, _WHAT)
    df = check_range(name, "df", df, 0, math.inf, open_lo=True)
    z = (y - mu) / s
    loss = (
        0.5 * (df + 1) * jnp.log1p(z**2 / df)
        + log_s
        + 0.5 * jnp.log(df * math.pi)
        + gammaln(0.5 * df)
        - gammaln(0.5 * (df + 1))
    )
    return reduce(name, loss, weights=weights, mask=mask, reduction=reduction)


def poisson_nll(
    log_rate: Float[ArrayLike, "*batch"],
    targets: Real[ArrayLike, "*batch"],
    *,
    weights: Float[ArrayLike, "*#batch"] | None = None,
    mask: Bool[ArrayLike, "*#batch"] | None = None,
    reduction: Reduction = "mean",
) -> Float[Array, "..."]:
    """Negative log-probability of counts under a Poisson distribution,
    $\\lambda - y \\log\\lambda + \\log y!$ per entry.

    The rate is given by its logarithm $\\eta = \\log\\lambda$ (a network's
    unconstrained output), so the loss is $e^\\eta - y\\eta + \\log\\Gamma(y + 1)$.
    The last term does not depend on the prediction; it is kept so that this is
    exactly $-\\log p(y)$.

    **Arguments:**

    - `log_rate`: $\\eta = \\log\\lambda$.
    - `targets`: the counts $y \\ge 0$, the shape of `log_rate`.
    - `weights`, `mask`, `reduction`: as described in `neuralde.losses`.
    """
    name = "poisson_nll"
    eta, y = pair(name, log_rate, targets, "log_rate")
    y = check_range(name, "targets", y, 0, math.inf, hint=" They are counts.")
    loss = jnp.exp(eta) - y * eta + gammaln(y + 1)
    return reduce(name, loss, weights=weights, mask=mask, reduction=reduction)


def bernoulli_nll(
    logits: Float[ArrayLike, "*batch"],
    targets: Real[ArrayLike, "*batch"],
    *,
    weights: Float[ArrayLike, "*#batch"] | None = None,
    mask: Bool[ArrayLike, "*#batch"] | None = None,
    reduction: Reduction = "mean",
) -> Float[Array, "..."]:
    """Negative log-probability of 0/1 outcomes under a Bernoulli distribution with
    $p = \\sigma(x)$: the same value as `binary_cross_entropy` from logits (without
    label smoothing), listed with the other likelihoods.

    **Arguments:**

    - `logits`: $x$.
    - `targets`: 0/1 (or probabilities), the shape of `logits`.
    - `weights`, `mask`, `reduction`: as described in `neuralde.losses`.
    """
    return sigmoid_cross_entropy(
        "bernoulli_nll",
        logits,
        targets,
        from_logits=True,
        label_smoothing=0.0,
        weights=weights,
        mask=mask,
        reduction=reduction,
    )


def categorical_nll(
    logits: Float[ArrayLike, "*batch classes"],
    labels: Int[ArrayLike, "*batch"] | Float[ArrayLike, "*batch classes"],
    *,
    weights: Float[ArrayLike, "*#batch"] | None = None,
    mask: Bool[ArrayLike, "*#batch"] | None = None,
    reduction: Reduction = "mean",
) -> Float[Array, "..."]:
    """Negative log-probability under a categorical distribution with probabilities
    $\\operatorname{softmax}(x)$: the same value as `cross_entropy` (without label
    smoothing or class weights), listed with the other likelihoods.

    **Arguments:** as for `cross_entropy`.
    """
    return softmax_cross_entropy(
        "categorical_nll",
        logits,
        labels,
        label_smoothing=0.0,
        class_weights=None,
        weights=weights,
        mask=mask,
        reduction=reduction,
    )


def gaussian_mixture_nll(
    logits: Float[ArrayLike, "*batch components"],
    means: Float[ArrayLike, "*batch components"]
    | Float[ArrayLike, "*batch components dim"],
    targets: Real[ArrayLike, "*batch"] | Real[ArrayLike, "*batch dim"],
    *,
    scale: Float[ArrayLike, "..."] | None = None,
    log_scale: Float[ArrayLike, "..."] | None = None,
    weights: Float[ArrayLike, "*#batch"] | None = None,
    mask: Bool[ArrayLike, "*#batch"] | None = None,
    reduction: Reduction = "mean",
) -> Float[Array, "..."]:
    """Negative log-density of a mixture of Gaussians, the output of a mixture
    density network (Bishop 1994).

    $-\\log \\sum_k \\pi_k \\mathcal N(y; \\mu_k, \\operatorname{diag}\\sigma_k^2)$
    with $\\pi = \\operatorname{softmax}(\\text{logits})$, computed by log-sum-exp
    (finite for extreme logits and for targets far from every component).

    **Arguments:**

    - `logits`: unnormalised log mixture weights, components on the last axis.
    - `means`: $\\mu_k$: of the shape of `logits` for scalar targets, or with a
        further trailing axis of size `dim` for vector targets (diagonal components).
    - `targets`: $y$, of shape `logits.shape[:-1]`, or with a trailing axis `dim`.
    - `scale`, `log_scale`: the standard deviations $\\sigma_k$ (or their logs),
        broadcastable to `means`; give exactly one.
    - `weights`, `mask`, `reduction`: as described in `neuralde.losses`, over
        `logits.shape[:-1]`.

    ??? cite "Reference"
        ```bibtex
        @techreport{bishop1994mixture,
            title={Mixture Density Networks},
            author={Bishop, Christopher M.},
            institution={Aston University},
            number={NCRG/94/004}, year={1994}
        }
        ```
    """
    name = "gaussian_mixture_nll"
    logits = floating(name, "logits", logits)
    check_class_axis(name, "logits", logits)
    mu = floating(name, "means", means).astype(logits.dtype)
    y = jnp.asarray(targets).astype(logits.dtype)
    vector = mu.ndim == logits.ndim + 1
    if mu.shape[: logits.ndim] != logits.shape or mu.ndim > logits.ndim + 1:
        raise ValueError(
            f"{name}: `means` must have the shape of `logits`, {logits.shape}, or "
            f"that shape plus a trailing `dim` axis; got {mu.shape}."
        )
    expected = logits.shape[:-1] + mu.shape[logits.ndim :]
    if y.shape != expected:
        raise ValueError(
            f"{name}: `targets` must have shape {expected} for logits "
            f"{logits.shape} and means {mu.shape}; got {y.shape}."
        )
    s, log_s = _scale(name, scale, log_scale, mu)
    y = y[..., None, :] if vector else y[..., None]
    log_density = -0.5 * ((y - mu) / s) ** 2 - log_s - _HALF_LOG_2PI
    if vector:
        log_density = jnp.sum(log_density, axis=-1)
    loss = jax.nn.logsumexp(logits, axis=-1) - jax.nn.logsumexp(
        logits + log_density, axis=-1
    )
    return reduce(name, loss, weights=weights, mask=mask, reduction=reduction)


_WHAT = "the predicted locations"


def _scale(name, scale, log_scale, like: Array) -> tuple[Array, Array]:
    """The scale and its logarithm, from exactly one of them, broadcast to `like`."""
    if (scale is None) == (log_scale is None):
        raise TypeError(
            f"{name}: give exactly one of `scale=` (positive) and `log_scale=`; got "
            f"{'both' if scale is not None else 'neither'}."
        )
    if log_scale is not None:
        log_s = floating(name, "log_scale", log_scale).astype(like.dtype)
        log_s = jnp.broadcast_to(
            broadcast_to_loss(name, "log_scale", log_s, like.shape, _WHAT), like.shape
        )
        return jnp.exp(log_s), log_s
    s = hyper(name, "scale", scale, like.dtype)
    s = broadcast_to_loss(name, "scale", s, like.shape, _WHAT)
    s = jnp.broadcast_to(s, like.shape)
    s = check_range(name, "scale", s, 0, math.inf, open_lo=True)
    return s, jnp.log(s)
