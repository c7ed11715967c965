from collections.abc import Callable
from typing import Literal

import jax.numpy as jnp
import jax.random as jr
from jaxtyping import Array, ArrayLike, Bool, Float, Int, PRNGKeyArray

from ._common import (
    check_labels,
    check_range,
    check_reduction,
    floating,
    pair,
    reduce,
    Reduction,
)


def denoising_score_matching(
    model: Callable[[Array, Array], Array],
    x0: Float[ArrayLike, " batch *data"],
    t: Int[ArrayLike, " batch"] | Float[ArrayLike, " batch"],
    *,
    alpha_bar: Float[ArrayLike, " steps"] | Callable[[Array], Array],
    key: PRNGKeyArray | None = None,
    noise: Float[ArrayLike, " batch *data"] | None = None,
    prediction: Literal["eps", "score"] = "eps",
    weights: Float[ArrayLike, " #batch"] | None = None,
    mask: Bool[ArrayLike, " #batch"] | None = None,
    reduction: Reduction = "mean",
) -> Float[Array, "..."]:
    """The denoising loss of a diffusion model (Ho et al. 2020; Vincent 2011).

    Each example is noised to
    $x_t = \\sqrt{\\bar\\alpha_t}\\, x_0 + \\sqrt{1 - \\bar\\alpha_t}\\, \\epsilon$,
    $\\epsilon \\sim \\mathcal N(0, I)$, and the model is called on the batch,
    `model(x_t, t)`. The loss is the mean over the data axes of

    - `prediction="eps"`: $\\|\\hat\\epsilon - \\epsilon\\|^2$, the
        $\\epsilon$-prediction loss $L_\\text{simple}$ of Ho et al.;
    - `prediction="score"`: $(1 - \\bar\\alpha_t)\\,\\|s - \\nabla \\log
        q(x_t \\mid x_0)\\|^2 = \\|\\sqrt{1 - \\bar\\alpha_t}\\, s + \\epsilon\\|^2$,
        denoising score matching with the usual weight $\\sigma_t^2$, for a model
        $s$ of the score. The two agree for $s = -\\hat\\epsilon / \\sigma_t$.

    **Arguments:**

    - `model`: called once as `model(x_t, t)` on the whole batch. For a model that
        acts on one example, pass `jax.vmap(model)`.
    - `x0`: the clean data, batch on the leading axis.
    - `t`: the time of each example: integer steps indexing an `alpha_bar` array,
        or any times for a callable `alpha_bar`.
    - `alpha_bar`: the noise schedule $\\bar\\alpha_t \\in (0, 1]$: an array over
        the steps, or a function of `t`.
    - `key`: a PRNG key to draw $\\epsilon$ with; or
    - `noise`: $\\epsilon$ itself, the shape of `x0`. Give exactly one.
    - `prediction`: `"eps"` (default) or `"score"`, what the model predicts.
    - `weights`, `mask`, `reduction`: as described in `neuralde.losses`, over the
        batch.

    ??? cite "Reference"
        ```bibtex
        @inproceedings{ho2020denoising,
            title={Denoising Diffusion Probabilistic Models},
            author={Ho, Jonathan and Jain, Ajay and Abbeel, Pieter},
            booktitle={Advances in Neural Information Processing Systems},
            volume={33}, pages={6840--6851}, year={2020}
        }

        @article{vincent2011connection,
            title={A Connection Between Score Matching and Denoising Autoencoders},
            author={Vincent, Pascal},
            journal={Neural Computation},
            volume={23}, number={7}, pages={1661--1674}, year={2011}
        }
        ```
    """
    name = "denoising_score_matching"
    if prediction not in ("eps", "score"):
        raise ValueError(
            f"{name}: `prediction` must be 'eps' or 'score', got {prediction!r}."
        )
    check_reduction(name, reduction)
    x0 = floating(name, "x0", x0)
    t = jnp.asarray(t)
    if x0.ndim == 0 or t.shape != x0.shape[:1]:
        raise ValueError(
            f"{name}: `t` must hold one time per example, shape {x0.shape[:1]}, for "
            f"`x0` of shape {x0.shape}; got {t.shape}."
        )
    if (key is None) == (noise is None):
        raise TypeError(
            f"{name}: give exactly one of `key=` (to draw the noise) and `noise=`; "
            f"got {'both' if key is not None else 'neither'}."
        )
    if noise is None:
        noise = jr.normal(key, x0.shape, x0.dtype)
    else:
        noise, _ = pair(name, noise, x0, "noise", "x0")
    if callable(alpha_bar):
        a = jnp.asarray(alpha_bar(t))
    else:
        schedule = floating(name, "alpha_bar", alpha_bar)
        if schedule.ndim != 1:
            raise ValueError(
                f"{name}: an `alpha_bar` array must be a vector over the steps, got "
                f"shape {schedule.shape}; or pass a function of `t`."
            )
        if not jnp.issubdtype(t.dtype, jnp.integer):
            raise TypeError(
                f"{name}: `t` indexes the `alpha_bar` array and must be integers, "
                f"got dtype {t.dtype}. For continuous times pass `alpha_bar` as a "
                "function of `t`."
            )
        steps = schedule.shape[0]
        a = schedule[check_labels(name, t, steps, what=("`t`", "`alpha_bar` steps"))]
    if a.shape != t.shape:
        raise ValueError(
            f"{name}: `alpha_bar(t)` must give one value per example, shape "
            f"{t.shape}; got {a.shape}."
        )
    a = check_range(name, "alpha_bar", a.astype(x0.dtype), 0, 1, open_lo=True)
    a = a.reshape(a.shape + (1,) * (x0.ndim - 1))
    sigma = jnp.sqrt(1 - a)
    x_t = jnp.sqrt(a) * x0 + sigma * noise
    out = jnp.asarray(model(x_t, t))
    if out.shape != x0.shape:
        raise ValueError(
            f"{name}: the model returned shape {out.shape} for `x_t` of shape "
            f"{x0.shape}; it must return one prediction per entry. For a model that "
            "acts on one example, pass `jax.vmap(model)`."
        )
    residual = out - noise if prediction == "eps" else sigma * out + noise
    loss = jnp.mean(residual**2, axis=tuple(range(1, x0.ndim)))
    return reduce(name, loss, weights=weights, mask=mask, reduction=reduction)
