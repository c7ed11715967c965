import jax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Bool, Float, Real

from ._common import (
    broadcast_to_loss,
    check_range,
    check_reduction,
    floating,
    Reduction,
)


def cox_partial_likelihood(
    risk: Float[ArrayLike, " n"],
    times: Real[ArrayLike, " n"],
    events: Bool[ArrayLike, " n"],
    *,
    weights: Float[ArrayLike, " n"] | None = None,
    mask: Bool[ArrayLike, " n"] | None = None,
    reduction: Reduction = "mean",
) -> Float[Array, "..."]:
    """The negative log partial likelihood of Cox's proportional-hazards model, with
    right censoring and Breslow's treatment of tied times.

    With risk scores $\\eta_i$ (the log hazard ratio a network predicts), the
    observed times $T_i$ and event indicators $\\delta_i$ (1 for an event, 0 for a
    censored time),
    $$-\\log L = -\\sum_{i:\\,\\delta_i = 1} \\Bigl(\\eta_i - \\log
    \\sum_{j:\\,T_j \\ge T_i} e^{\\eta_j}\\Bigr).$$
    Every subject still at risk at $T_i$ (including the others that fail at the same
    time: Breslow) is in the risk set. A censored subject enters only risk sets.
    Sorted once, with a cumulative log-sum-exp: $O(n \\log n)$, and finite for
    extreme scores. Only differences of scores matter, so the model needs no bias.

    A minibatch gives the partial likelihood of that minibatch, whose risk sets are
    those of the batch, not of the whole data set.

    **Arguments:**

    - `risk`: $\\eta$, one score per subject.
    - `times`: $T$, the event or censoring times.
    - `events`: $\\delta$, true (1) where the time is an event.
    - `weights`: case weights $w_i \\ge 0$: subject $i$ counts as $w_i$ subjects, in
        its own term and in every risk set it belongs to.
    - `mask`: `False` leaves a subject out entirely (e.g. padding).
    - `reduction`: `"mean"` (default): divided by the (weighted) number of events,
        0 if there is none; `"sum"`: $-\\log L$; `"none"`: each subject's term
        (zero for censored ones), which sum to $-\\log L$.

    ??? cite "Reference"
        ```bibtex
        @article{cox1972regression,
            title={Regression Models and Life-Tables},
            author={Cox, David R.},
            journal={Journal of the Royal Statistical Society: Series B
                     (Methodological)},
            volume={34}, number={2}, pages={187--220}, year={1972}
        }

        @article{breslow1974covariance,
            title={Covariance Analysis of Censored Survival Data},
            author={Breslow, Norman E.},
            journal={Biometrics},
            volume={30}, number={1}, pages={89--99}, year={1974}
        }
        ```
    """
    name = "cox_partial_likelihood"
    check_reduction(name, reduction)
    eta = floating(name, "risk", risk)
    times = jnp.asarray(times)
    events = jnp.asarray(events)
    if eta.ndim != 1 or times.shape != eta.shape or events.shape != eta.shape:
        raise ValueError(
            f"{name}: `risk`, `times` and `events` must be vectors of one length, "
            f"one entry per subject; got shapes {eta.shape}, {times.shape} and "
            f"{events.shape}."
        )
    if reduction == "mean" and eta.shape[0] == 0:
        raise ValueError(
            f"{name}: the batch is empty, so its mean is undefined. Skip empty "
            "batches, or use `reduction='sum'`, which is 0 for an empty batch."
        )
    events = check_range(
        name, "events", events.astype(eta.dtype), 0, 1, hint=" They are 0/1."
    )
    w = jnp.ones_like(eta)
    if weights is not None:
        w = broadcast_to_loss(name, "weights", weights, eta.shape).astype(eta.dtype)
        w = jnp.broadcast_to(w, eta.shape)
    if mask is not None:
        mask = broadcast_to_loss(name, "mask", mask, eta.shape).astype(bool)
        w = jnp.where(mask, w, 0)
    # log(w_j e^{eta_j}); a subject of weight zero adds e^{-big} = 0 to risk sets,
    # finite so that no gradient is nan.
    present = w > 0
    lowest = jnp.finfo(eta.dtype).min / 4
    log_terms = jnp.where(present, eta + jnp.log(jnp.where(present, w, 1)), lowest)
    order = jnp.argsort(times)
    sorted_times = times[order]
    # tail[k] = log sum_{j >= k} w_j e^{eta_j}, in order of increasing time.
    tail = jax.lax.cumlogsumexp(log_terms[order], reverse=True)
    # The risk set of i starts at the first subject with T_j >= T_i (ties included).
    first = jnp.searchsorted(sorted_times, times, side="left")
    log_risk_set = tail[first]
    counted = w * events
    terms = jnp.where(counted > 0, counted * (log_risk_set - eta), 0)
    if reduction == "none":
        return terms
    total = jnp.sum(terms)
    if reduction == "sum":
        return total
    n_events = jnp.sum(counted)
    return total / jnp.where(n_events > 0, n_events, 1)
