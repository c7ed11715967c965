import math

import jax.numpy as jnp
import optax
from jaxtyping import Array, ArrayLike, Bool, Float, Real

from ._common import (
    broadcast_to_loss,
    check_range,
    floating,
    hyper,
    pair,
    reduce,
    Reduction,
)


def mse(
    predictions: Float[ArrayLike, "*batch"],
    targets: Real[ArrayLike, "*batch"],
    *,
    weights: Float[ArrayLike, "*#batch"] | None = None,
    mask: Bool[ArrayLike, "*#batch"] | None = None,
    reduction: Reduction = "mean",
) -> Float[Array, "..."]:
    """Mean squared error: $(f - y)^2$ per entry.

    Wraps `optax.losses.squared_error` and adds the weights, the mask and the
    reduction (optax returns the per-entry values only).

    **Arguments:**

    - `predictions`: $f$, any shape.
    - `targets`: $y$, the same shape.
    - `weights`, `mask`, `reduction`: as described in `neuralde.losses`.

    **Returns:** a scalar, or the per-entry loss with `reduction="none"`.
    """
    f, y = pair("mse", predictions, targets)
    loss = optax.losses.squared_error(f, y)
    return reduce("mse", loss, weights=weights, mask=mask, reduction=reduction)


def mae(
    predictions: Float[ArrayLike, "*batch"],
    targets: Real[ArrayLike, "*batch"],
    *,
    weights: Float[ArrayLike, "*#batch"] | None = None,
    mask: Bool[ArrayLike, "*#batch"] | None = None,
    reduction: Reduction = "mean",
) -> Float[Array, "..."]:
    """Mean absolute error: $|f - y|$ per entry.

    **Arguments:** as for `mse`.
    """
    f, y = pair("mae", predictions, targets)
    loss = jnp.abs(f - y)
    return reduce("mae", loss, weights=weights, mask=mask, reduction=reduction)


def rmse(
    predictions: Float[ArrayLike, "*batch"],
    targets: Real[ArrayLike, "*batch"],
    *,
    weights: Float[ArrayLike, "*#batch"] | None = None,
    mask: Bool[ArrayLike, "*#batch"] | None = None,
) -> Float[Array, ""]:
    """Root mean squared error, $\\sqrt{\\text{mse}}$ over the whole batch.

    A square root of a mean has no per-example form, so there is no `reduction`:
    the result is always a scalar (take `jnp.sqrt` of `mse(..., reduction="none")`
    averaged over the axes you need). Its gradient at a perfect fit is taken as
    zero rather than the $0/0$ of $\\sqrt{\\cdot}$ at zero.

    **Arguments:** as for `mse`; the weights and the mask enter the mean.
    """
    m = mse(predictions, targets, weights=weights, mask=mask, reduction="mean")
    positive = m > 0
    return jnp.where(positive, jnp.sqrt(jnp.where(positive, m, 1)), 0)


def huber(
    predictions: Float[ArrayLike, "*batch"],
    targets: Real[ArrayLike, "*batch"],
    *,
    delta: float = 1.0,
    weights: Float[ArrayLike, "*#batch"] | None = None,
    mask: Bool[ArrayLike, "*#batch"] | None = None,
    reduction: Reduction = "mean",
) -> Float[Array, "..."]:
    """Huber's loss: quadratic near zero, linear in the tails (Huber 1964).

    $\\rho(e) = \\tfrac12 e^2$ for $|e| \\le \\delta$, and
    $\\delta (|e| - \\tfrac12\\delta)$ beyond, with $e = f - y$. Its gradient is
    the error clipped to $[-\\delta, \\delta]$.

    Wraps `optax.losses.huber_loss`, adding the weights, the mask, the reduction and
    the check of `delta`.

    **Arguments:**

    - `predictions`, `targets`: as for `mse`.
    - `delta`: $\\delta > 0$, where the loss turns from quadratic to linear.
    - `weights`, `mask`, `reduction`: as described in `neuralde.losses`.

    ??? cite "Reference"
        ```bibtex
        @article{huber1964robust,
            title={Robust Estimation of a Location Parameter},
            author={Huber, Peter J.},
            journal={The Annals of Mathematical Statistics},
            volume={35}, number={1}, pages={73--101}, year={1964}
        }
        ```
    """
    f, y = pair("huber", predictions, targets)
    delta = _positive("huber", "delta", delta, f)
    loss = optax.losses.huber_loss(f, y, delta=delta)
    return reduce("huber", loss, weights=weights, mask=mask, reduction=reduction)


def tukey_biweight(
    predictions: Float[ArrayLike, "*batch"],
    targets: Real[ArrayLike, "*batch"],
    *,
    delta: float = 4.685,
    weights: Float[ArrayLike, "*#batch"] | None = None,
    mask: Bool[ArrayLike, "*#batch"] | None = None,
    reduction: Reduction = "mean",
) -> Float[Array, "..."]:
    """Tukey's biweight (bisquare) loss, which ignores gross outliers.

    $\\rho(e) = \\frac{\\delta^2}{6}\\bigl(1 - (1 - (e/\\delta)^2)^3\\bigr)$ for
    $|e| \\le \\delta$ and $\\delta^2/6$ beyond, with $e = f - y$: errors larger
    than $\\delta$ have zero gradient. The default $\\delta = 4.685$ gives 95%
    efficiency at the normal distribution (for errors of unit scale). The loss is not
    convex; start from a fit by a convex loss.

    **Arguments:**

    - `predictions`, `targets`: as for `mse`.
    - `delta`: $\\delta > 0$, the rejection point.
    - `weights`, `mask`, `reduction`: as described in `neuralde.losses`.

    ??? cite "Reference"
        ```bibtex
        @article{beaton1974fitting,
            title={The Fitting of Power Series, Meaning Polynomials, Illustrated on
                   Band-Spectroscopic Data},
            author={Beaton, Albert E. and Tukey, John W.},
            journal={Technometrics},
            volume={16}, number={2}, pages={147--185}, year={1974}
        }
        ```
    """
    f, y = pair("tukey_biweight", predictions, targets)
    delta = _positive("tukey_biweight", "delta", delta, f)
    u = jnp.minimum(((f - y) / delta) ** 2, 1)
    loss = delta**2 / 6 * (1 - (1 - u) ** 3)
    return reduce(
        "tukey_biweight", loss, weights=weights, mask=mask, reduction=reduction
    )


def barron(
    predictions: Float[ArrayLike, "*batch"],
    targets: Real[ArrayLike, "*batch"],
    *,
    alpha: float | Float[ArrayLike, "*#batch"],
    scale: float | Float[ArrayLike, "*#batch"] = 1.0,
    weights: Float[ArrayLike, "*#batch"] | None = None,
    mask: Bool[ArrayLike, "*#batch"] | None = None,
    reduction: Reduction = "mean",
) -> Float[Array, "..."]:
    """Barron's general and adaptive robust loss.

    With $x = (f - y)/c$,
    $$\\rho(x, \\alpha, c) = \\frac{|\\alpha - 2|}{\\alpha}
    \\left(\\left(\\frac{x^2}{|\\alpha - 2|} + 1\\right)^{\\alpha/2} - 1\\right).$$
    The shape $\\alpha$ moves between well-known losses, each computed exactly by its
    own closed form:

    | $\\alpha$ | loss |
    |---|---|
    | $2$ | $\\tfrac12 x^2$ (L2, a limit) |
    | $1$ | $\\sqrt{x^2 + 1} - 1$ (pseudo-Huber, smoothed L1) |
    | $0$ | $\\log(\\tfrac12 x^2 + 1)$ (Cauchy / Lorentzian, a limit) |
    | $-2$ | $2x^2/(x^2 + 4)$ (Geman–McClure) |
    | $-\\infty$ | $1 - e^{-x^2/2}$ (Welsch / Leclerc, a limit) |
    | $+\\infty$ | $e^{x^2/2} - 1$ (a limit) |

    Other values use the formula above, evaluated with `expm1` and `log1p` to keep
    its accuracy near the limits. The loss is differentiable in `alpha` and `scale`
    too, so both may be learned (Barron's adaptive loss, which also needs the
    normalising constant of the matching density; that is not included here). At
    the exact special values the gradient in `alpha` is that of the closed form,
    i.e. zero.

    **Arguments:**

    - `predictions`, `targets`: as for `mse`.
    - `alpha`: the shape $\\alpha$, a number (including `±jnp.inf`) or an array
        broadcastable to the predictions.
    - `scale`: $c > 0$, the size of the quadratic bowl near zero.
    - `weights`, `mask`, `reduction`: as described in `neuralde.losses`.

    ??? cite "Reference"
        ```bibtex
        @inproceedings{barron2019general,
            title={A General and Adaptive Robust Loss Function},
            author={Barron, Jonathan T.},
            booktitle={Proceedings of the IEEE/CVF Conference on Computer Vision and
                       Pattern Recognition (CVPR)},
            pages={4331--4339}, year={2019}
        }
        ```
    """
    f, y = pair("barron", predictions, targets)
    scale = _positive("barron", "scale", scale, f)
    alpha = hyper("barron", "alpha", alpha, f.dtype)
    alpha = broadcast_to_loss("barron", "alpha", alpha, f.shape, "the predictions")
    alpha = check_range("barron", "alpha", alpha, -math.inf, math.inf)  # not NaN
    z = ((f - y) / scale) ** 2
    loss = _barron_rho(z, alpha)
    return reduce("barron", loss, weights=weights, mask=mask, reduction=reduction)


def _barron_rho(z: Array, a: Array) -> Array:
    """Barron's loss as a function of $z = x^2$; every branch stays finite (with
    finite gradients) wherever it is not selected."""
    special = (a == 2) | (a == 1) | (a == 0) | (a == -2) | jnp.isinf(a)
    a_ = jnp.where(special, 0.5, a)
    b = jnp.abs(a_ - 2)
    general = b / a_ * jnp.expm1(0.5 * a_ * jnp.log1p(z / b))
    # e^{z/2} overflows for large z; only evaluate it where alpha = +inf.
    z_inf = jnp.where(a == jnp.inf, z, 0)
    return jnp.select(
        [a == 2, a == 1, a == 0, a == -2, a == -jnp.inf, a == jnp.inf],
        [
            0.5 * z,
            z / (jnp.sqrt(z + 1) + 1),  # sqrt(z + 1) - 1 without cancellation
            jnp.log1p(0.5 * z),
            2 * z / (z + 4),
            -jnp.expm1(-0.5 * z),
            jnp.expm1(0.5 * z_inf),
        ],
        general,
    )


def pinball(
    predictions: Float[ArrayLike, "*batch"] | Float[ArrayLike, "*batch quantiles"],
    targets: Real[ArrayLike, "*batch"],
    *,
    tau: float | Float[ArrayLike, " quantiles"],
    weights: Float[ArrayLike, "*#batch"] | None = None,
    mask: Bool[ArrayLike, "*#batch"] | None = None,
    reduction: Reduction = "mean",
) -> Float[Array, "..."]:
    """The pinball (check) loss of quantile regression (Koenker & Bassett 1978).

    With the error $e = y - f$ (target minus prediction),
    $\\rho_\\tau(e) = \\max(\\tau e, (\\tau - 1) e)$: under-predictions cost
    $\\tau$ per unit and over-predictions $1 - \\tau$, so its minimiser is the
    $\\tau$-quantile of $y$.

    A multi-quantile head predicts several quantiles at once: give `tau` as a
    vector of $Q$ levels and `predictions` with a trailing axis of size $Q$; the
    per-example loss is then the mean over the quantiles.

    **Arguments:**

    - `predictions`: $f$, the shape of `targets`; or that shape plus a trailing
        quantile axis, with a vector `tau`.
    - `targets`: $y$.
    - `tau`: the quantile level(s), each in $(0, 1)$: a number, or a vector.
    - `weights`, `mask`, `reduction`: as described in `neuralde.losses`; they act on
        the shape of `targets`.

    ??? cite "Reference"
        ```bibtex
        @article{koenker1978regression,
            title={Regression Quantiles},
            author={Koenker, Roger and Bassett, Gilbert},
            journal={Econometrica},
            volume={46}, number={1}, pages={33--50}, year={1978}
        }
        ```
    """
    name = "pinball"
    tau = jnp.asarray(tau)
    if tau.ndim == 0:
        f, y = pair(name, predictions, targets)
    elif tau.ndim == 1:
        f = jnp.asarray(predictions)
        y = jnp.asarray(targets)
        if f.ndim == 0 or f.shape[-1] != tau.shape[0] or y.shape != f.shape[:-1]:
            raise ValueError(
                f"{name}: with {tau.shape[0]} quantile levels `tau`, `predictions` "
                "must carry a trailing quantile axis of that size and `targets` "
                f"the shape without it; got predictions {f.shape} and targets "
                f"{y.shape}."
            )
        f = floating(name, "predictions", f)
        y = y.astype(f.dtype)[..., None]
    else:
        raise ValueError(
            f"{name}: `tau` must be a number or a vector of quantile levels, got "
            f"shape {tau.shape}."
        )
    tau = hyper(name, "tau", tau, f.dtype)
    tau = check_range(name, "tau", tau, 0.0, 1.0, open_lo=True, open_hi=True)
    e = y - f
    loss = jnp.maximum(tau * e, (tau - 1) * e)
    if tau.ndim == 1:
        loss = jnp.mean(loss, axis=-1)
    return reduce(name, loss, weights=weights, mask=mask, reduction=reduction)


def _positive(name: str, arg: str, x, predictions: Array) -> Array:
    """A positive hyper-parameter, broadcastable to the predictions."""
    x = hyper(name, arg, x, predictions.dtype)
    x = broadcast_to_loss(name, arg, x, predictions.shape, "the predictions")
    return check_range(name, arg, x, 0.0, math.inf, open_lo=True)
