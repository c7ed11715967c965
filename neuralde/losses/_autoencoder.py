import math
from typing import Literal

import jax.numpy as jnp
import optax
from jaxtyping import Array, ArrayLike, Bool, Float, Real

from ._common import (
    binary_targets,
    check_range,
    floating,
    hyper,
    pair,
    reduce,
    Reduction,
)


def reconstruction(
    predictions: Float[ArrayLike, " batch *data"],
    targets: Real[ArrayLike, " batch *data"],
    *,
    kind: Literal["squared", "bernoulli"] = "squared",
    weights: Float[ArrayLike, " #batch"] | None = None,
    mask: Bool[ArrayLike, " #batch"] | None = None,
    reduction: Reduction = "mean",
) -> Float[Array, "..."]:
    """The reconstruction loss of an autoencoder, summed over each example.

    - `kind="squared"`: $\\|\\hat x - x\\|^2$, the sum of squared errors;
    - `kind="bernoulli"`: $\\sum_d \\mathrm{BCE}(\\hat x_d, x_d)$ with `predictions`
        the logits of a Bernoulli decoder, for data in $[0, 1]$ (e.g. binarised
        images).

    The leading axis is the batch; the sum runs over all the others.

    **Arguments:**

    - `predictions`: the reconstructions $\\hat x$ (logits for `"bernoulli"`).
    - `targets`: the inputs $x$, of the same shape.
    - `kind`: `"squared"` (default) or `"bernoulli"`.
    - `weights`, `mask`, `reduction`: as described in `neuralde.losses`, over the
        batch.
    """
    loss = _reconstruction_terms("reconstruction", predictions, targets, kind)
    axes = tuple(range(1, loss.ndim))
    loss = jnp.sum(loss, axis=axes)
    return reduce(
        "reconstruction", loss, weights=weights, mask=mask, reduction=reduction
    )


def _reconstruction_terms(name, predictions, targets, kind) -> Array:
    if kind not in ("squared", "bernoulli"):
        raise ValueError(
            f"{name}: `kind` must be 'squared' or 'bernoulli', got {kind!r}."
        )
    x_hat = floating(name, "predictions", predictions)
    if x_hat.ndim == 0:
        raise ValueError(f"{name}: `predictions` need a leading batch axis.")
    if kind == "squared":
        x_hat, x = pair(name, x_hat, targets)
        return (x_hat - x) ** 2
    x = binary_targets(name, x_hat, targets)
    return optax.losses.sigmoid_binary_cross_entropy(x_hat, x)


def gaussian_kl(
    mean: Float[ArrayLike, "*batch latent"],
    log_variance: Float[ArrayLike, "*batch latent"] | None = None,
    *,
    scale_tril: Float[ArrayLike, "*batch latent latent"] | None = None,
    weights: Float[ArrayLike, "*#batch"] | None = None,
    mask: Bool[ArrayLike, "*#batch"] | None = None,
    reduction: Reduction = "mean",
) -> Float[Array, "..."]:
    """$\\mathrm{KL}(\\mathcal N(\\mu, \\Sigma) \\,\\|\\, \\mathcal N(0, I))$ in
    closed form, per example:
    $\\tfrac12\\bigl(\\|\\mu\\|^2 + \\operatorname{tr}\\Sigma - \\log\\det\\Sigma -
    m\\bigr)$ for an $m$-dimensional latent. The KL term of `vae_elbo`.

    **Arguments:**

    - `mean`: $\\mu$, the latent on the last axis.
    - `log_variance`: $\\log\\sigma^2$ of a diagonal $\\Sigma$, the shape of `mean`;
        or
    - `scale_tril`: a lower-triangular $L$ with $\\Sigma = L L^\\top$, shape
        `(..., m, m)` (its upper triangle is ignored). Give exactly one.
    - `weights`, `mask`, `reduction`: as described in `neuralde.losses`, over
        `mean.shape[:-1]`.
    """
    loss = _gaussian_kl("gaussian_kl", mean, log_variance, scale_tril)
    return reduce("gaussian_kl", loss, weights=weights, mask=mask, reduction=reduction)


def _gaussian_kl(name, mean, log_variance, scale_tril) -> Array:
    mu = floating(name, "mean", mean)
    if mu.ndim == 0:
        raise ValueError(f"{name}: `mean` needs a trailing latent axis.")
    if (log_variance is None) == (scale_tril is None):
        raise TypeError(
            f"{name}: give exactly one of `log_variance` (diagonal covariance) and "
            f"`scale_tril=` (full covariance); got "
            f"{'both' if scale_tril is not None else 'neither'}."
        )
    if log_variance is not None:
        log_var = floating(name, "log_variance", log_variance).astype(mu.dtype)
        if log_var.shape != mu.shape:
            raise ValueError(
                f"{name}: `log_variance` must have the shape of `mean`, {mu.shape}; "
                f"got {log_var.shape}."
            )
        trace = jnp.sum(jnp.exp(log_var), axis=-1)
        log_det = jnp.sum(log_var, axis=-1)
    else:
        L = floating(name, "scale_tril", scale_tril).astype(mu.dtype)
        if L.shape != mu.shape + mu.shape[-1:]:
            raise ValueError(
                f"{name}: `scale_tril` must have shape {mu.shape + mu.shape[-1:]} "
                f"for a mean of shape {mu.shape}; got {L.shape}."
            )
        L = jnp.tril(L)
        trace = jnp.sum(L**2, axis=(-2, -1))
        log_det = 2 * jnp.sum(jnp.log(jnp.abs(jnp.diagonal(L, 0, -2, -1))), axis=-1)
    return 0.5 * (jnp.sum(mu**2, axis=-1) + trace - log_det - mu.shape[-1])


def vae_elbo(
    predictions: Float[ArrayLike, " batch *data"],
    targets: Real[ArrayLike, " batch *data"],
    mean: Float[ArrayLike, "batch latent"],
    log_variance: Float[ArrayLike, "batch latent"],
    *,
    likelihood: Literal["gaussian", "bernoulli"] = "gaussian",
    scale: float = 1.0,
    beta: float = 1.0,
    weights: Float[ArrayLike, " #batch"] | None = None,
    mask: Bool[ArrayLike, " #batch"] | None = None,
    reduction: Reduction = "mean",
) -> Float[Array, "..."]:
    """The negative evidence lower bound of a variational autoencoder (Kingma &
    Welling 2014), per example: the loss to minimise.

    $$-\\mathrm{ELBO}(x) = -\\log p(x \\mid z) + \\beta\\,
    \\mathrm{KL}(q(z \\mid x) \\,\\|\\, \\mathcal N(0, I)),$$
    with the decoder's negative log-likelihood summed over the data axes for one
    sample $z \\sim q$ (drawn by the caller with the reparameterisation
    $z = \\mu + \\sigma \\epsilon$), and the Gaussian KL in closed form
    (`gaussian_kl`). $\\beta = 1$ is the ELBO; $\\beta \\neq 1$ the β-VAE.

    **Arguments:**

    - `predictions`: the decoder's output for $z$: the mean of a Gaussian decoder,
        or the logits of a Bernoulli decoder. The leading axis is the batch.
    - `targets`: the data $x$, of the same shape.
    - `mean`, `log_variance`: the encoder's $\\mu$ and $\\log\\sigma^2$ of
        $q(z \\mid x)$, shape `(batch, latent)`.
    - `likelihood`: `"gaussian"` (default): $\\mathcal N(\\hat x, s^2 I)$, the
        exact negative log-density with its constant; or `"bernoulli"`.
    - `scale`: $s > 0$, the Gaussian decoder's standard deviation.
    - `beta`: $\\beta \\ge 0$, the weight of the KL term.
    - `weights`, `mask`, `reduction`: as described in `neuralde.losses`, over the
        batch.

    ??? cite "Reference"
        ```bibtex
        @inproceedings{kingma2014auto,
            title={Auto-Encoding Variational {B}ayes},
            author={Kingma, Diederik P. and Welling, Max},
            booktitle={International Conference on Learning Representations (ICLR)},
            year={2014}
        }
        ```
    """
    name = "vae_elbo"
    if likelihood not in ("gaussian", "bernoulli"):
        raise ValueError(
            f"{name}: `likelihood` must be 'gaussian' or 'bernoulli', got "
            f"{likelihood!r}."
        )
    x_hat = floating(name, "predictions", predictions)
    if likelihood == "gaussian":
        s = hyper(name, "scale", scale, x_hat.dtype)
        s = check_range(name, "scale", s, 0, math.inf, open_lo=True)
        terms = _reconstruction_terms(
            name, x_hat / s, jnp.asarray(targets) / s, "squared"
        )
        terms = 0.5 * terms + jnp.log(s) + 0.5 * math.log(2 * math.pi)
    else:
        terms = _reconstruction_terms(name, x_hat, targets, "bernoulli")
    nll = jnp.sum(terms, axis=tuple(range(1, terms.ndim)))
    kl = _gaussian_kl(name, mean, log_variance, None)
    if kl.shape != nll.shape:
        raise ValueError(
            f"{name}: `mean` and `log_variance` must have shape (batch, latent) with "
            f"the batch of `predictions`, {nll.shape}; got {jnp.shape(mean)}."
        )
    beta = check_range(name, "beta", hyper(name, "beta", beta, x_hat.dtype), 0)
    return reduce(
        name, nll + beta * kl, weights=weights, mask=mask, reduction=reduction
    )
