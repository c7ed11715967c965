from typing import Literal

import jax
from jaxtyping import Array, ArrayLike, Bool, Float

from ._common import (
    check_range,
    floating,
    hyper,
    reduce,
    Reduction,
)


def gan_discriminator(
    real_logits: Float[ArrayLike, " *real"],
    fake_logits: Float[ArrayLike, " *fake"],
    *,
    label_smoothing: float = 0.0,
    reduction: Literal["mean", "sum"] = "mean",
) -> Float[Array, ""]:
    """The discriminator's loss of a GAN (Goodfellow et al. 2014):
    $-\\log D(x) - \\log(1 - D(G(z)))$, with $D = \\sigma(\\text{logit})$.

    Computed as $\\operatorname{softplus}(-r) + \\operatorname{softplus}(f)$, finite
    for any finite logits. The real and fake batches may differ in size, so there
    is no per-example form: `"mean"` (default) is the mean over the real batch plus
    the mean over the fake batch; `"sum"` the sum of both.

    **Arguments:**

    - `real_logits`: $D$'s logits on real data.
    - `fake_logits`: $D$'s logits on generated data.
    - `label_smoothing`: $\\varepsilon \\in [0, 1)$, one-sided: the real label
        becomes $1 - \\varepsilon$ (Salimans et al. 2016 use 0.1); fakes stay 0.
    - `reduction`: `"mean"` or `"sum"`.

    ??? cite "Reference"
        ```bibtex
        @inproceedings{goodfellow2014generative,
            title={Generative Adversarial Nets},
            author={Goodfellow, Ian and Pouget-Abadie, Jean and Mirza, Mehdi and Xu,
                    Bing and Warde-Farley, David and Ozair, Sherjil and Courville,
                    Aaron and Bengio, Yoshua},
            booktitle={Advances in Neural Information Processing Systems},
            volume={27}, year={2014}
        }
        ```
    """
    name = "gan_discriminator"
    if reduction not in ("mean", "sum"):
        raise ValueError(
            f"{name}: `reduction` must be 'mean' or 'sum' (real and fake batches "
            f"have no common per-example form), got {reduction!r}. For separate "
            "terms, use `binary_cross_entropy` on each batch."
        )
    r = floating(name, "real_logits", real_logits)
    f = floating(name, "fake_logits", fake_logits)
    eps = hyper(name, "label_smoothing", label_smoothing, r.dtype)
    eps = check_range(name, "label_smoothing", eps, 0, 1, open_hi=True)
    # -(1 - eps) log sigma(r) - eps log sigma(-r)
    real = (1 - eps) * jax.nn.softplus(-r) + eps * jax.nn.softplus(r)
    fake = jax.nn.softplus(f)
    return reduce(name, real, reduction=reduction) + reduce(
        name, fake, reduction=reduction
    )


def gan_generator(
    fake_logits: Float[ArrayLike, "*batch"],
    *,
    kind: Literal["non_saturating", "minimax"] = "non_saturating",
    weights: Float[ArrayLike, "*#batch"] | None = None,
    mask: Bool[ArrayLike, "*#batch"] | None = None,
    reduction: Reduction = "mean",
) -> Float[Array, "..."]:
    """The generator's loss of a GAN (Goodfellow et al. 2014), from the
    discriminator's logits $f$ on generated data, $D = \\sigma(f)$.

    - `kind="non_saturating"` (default): $-\\log D(G(z)) =
        \\operatorname{softplus}(-f)$, whose gradient stays large while the
        discriminator wins, as the paper recommends in practice;
    - `kind="minimax"`: $\\log(1 - D(G(z))) = -\\operatorname{softplus}(f)$, the
        game's value itself (negative, and saturating when $D(G(z)) \\approx 0$).

    **Arguments:**

    - `fake_logits`: $f$.
    - `kind`: `"non_saturating"` or `"minimax"`.
    - `weights`, `mask`, `reduction`: as described in `neuralde.losses`.
    """
    name = "gan_generator"
    f = floating(name, "fake_logits", fake_logits)
    if kind == "non_saturating":
        loss = jax.nn.softplus(-f)
    elif kind == "minimax":
        loss = -jax.nn.softplus(f)
    else:
        raise ValueError(
            f"{name}: `kind` must be 'non_saturating' or 'minimax', got {kind!r}."
        )
    return reduce(name, loss, weights=weights, mask=mask, reduction=reduction)
